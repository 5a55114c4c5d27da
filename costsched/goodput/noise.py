"""The gradient noise scale (Pollux, OSDI '21; McCandlish et al. 2018), estimated while training.

Each step yields ``n >= 2`` gradients ``g_1 .. g_n`` of ``b`` examples each (one
per replica, or per micro-batch on one GPU) and their mean ``g``. With ``G`` the
true gradient and ``Sigma`` the covariance of one example's gradient,

    E |g_i|^2 = |G|^2 + tr(Sigma) / b,    E |g|^2 = |G|^2 + tr(Sigma) / (n b),

so with ``local = mean_i |g_i|^2`` and ``total = |g|^2`` the unbiased estimates are

    |G|^2     ~ (n total - local) / (n - 1),
    tr(Sigma) ~ n b (local - total) / (n - 1).

Single steps are noisy; both are smoothed by an exponential moving average whose
weight per step grows with the examples it saw (``theta = smoothing^(n b / B0)``),
bias-corrected like Adam's:

    avg = biased / unbias,  biased <- theta biased + (1 - theta) x,
                            unbias <- theta unbias + (1 - theta).

The noise scale ``B_noise = tr(Sigma) / |G|^2`` is the batch size past which a
larger batch buys little: the statistical efficiency of batch ``B`` over ``B0`` is
``(B_noise + B0) / (B_noise + B)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from costsched.policy.snapshot import EfficiencyModel

_MIN_GRAD_SQR = 1e-12
"""Floor of |G|^2 handed to the policy: pure noise still has a finite efficiency model."""


def grad_stats(local_sqr_norms: Sequence[float], mean_sqr_norm: float,
               local_batch_size: int) -> tuple[float, float]:
    """Unbiased ``(|G|^2, tr Sigma)`` from one step's gradients (see the module docstring).

    ``local_sqr_norms``: |g_i|^2 of each of the n >= 2 gradients; ``mean_sqr_norm``:
    |mean_i g_i|^2; ``local_batch_size``: examples behind each g_i. Either estimate
    may come out negative on a single step; the average over steps does not.
    """
    count = len(local_sqr_norms)
    if count < 2:
        raise ValueError("need the gradients of at least 2 replicas or micro-batches")
    if local_batch_size < 1:
        raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
    local = float(np.mean(local_sqr_norms))
    total = float(mean_sqr_norm)
    grad_sqr = (count * total - local) / (count - 1)
    grad_var = count * local_batch_size * (local - total) / (count - 1)
    return grad_sqr, grad_var


class NoiseScaleEstimator:
    """Smoothed |G|^2 and tr(Sigma) over training steps, and the efficiency model they give."""

    def __init__(self, init_batch_size: int, smoothing: float = 0.999) -> None:
        """``smoothing``: the weight the average keeps per ``init_batch_size`` examples seen."""
        if init_batch_size < 1 or not 0.0 < smoothing < 1.0:
            raise ValueError("need init_batch_size >= 1 and 0 < smoothing < 1")
        self.init_batch_size = init_batch_size
        self.smoothing = smoothing
        self._biased = np.zeros(2)  # (|G|^2, tr Sigma)
        self._unbias = 0.0
        self.num_updates = 0

    def update(self, local_sqr_norms: Sequence[float], mean_sqr_norm: float,
               local_batch_size: int) -> None:
        """Fold in one step's gradients (arguments as :func:`grad_stats`)."""
        stats = np.array(grad_stats(local_sqr_norms, mean_sqr_norm, local_batch_size))
        if not np.isfinite(stats).all():
            return  # an overflowed (mixed-precision) step says nothing; skip it
        examples = len(local_sqr_norms) * local_batch_size
        theta = self.smoothing ** (examples / self.init_batch_size)
        self._biased = theta * self._biased + (1.0 - theta) * stats
        self._unbias = theta * self._unbias + (1.0 - theta)
        self.num_updates += 1

    def _average(self) -> np.ndarray:
        if self._unbias == 0.0:
            return np.full(2, math.nan)
        return self._biased / self._unbias

    @property
    def grad_sqr(self) -> float:
        """|G|^2, the squared norm of the true gradient (nan before any update)."""
        return float(max(self._average()[0], 0.0)) if self.num_updates else math.nan

    @property
    def grad_var(self) -> float:
        """tr(Sigma), the variance of one example's gradient (nan before any update)."""
        return float(max(self._average()[1], 0.0)) if self.num_updates else math.nan

    @property
    def noise_scale(self) -> float:
        """B_noise = tr(Sigma) / |G|^2 in examples: the critical batch size (inf: pure noise)."""
        sqr, var = self.grad_sqr, self.grad_var
        if math.isnan(sqr):
            return math.nan
        return var / sqr if sqr > 0 else math.inf

    def efficiency_model(self, init_batch_size: int, max_batch_size: int) -> EfficiencyModel:
        """The policy's efficiency model at initial batch ``B0 = init_batch_size``.

        Its ``grad_var`` is the variance of a B0-example gradient, tr(Sigma) / B0, so
        that its gain (var + sqr) / (var / s + sqr) at s = B / B0 is Pollux's.
        """
        if not self.num_updates:
            raise ValueError("no gradient statistics yet: call update() after a step first")
        return EfficiencyModel(init_batch_size=init_batch_size, max_batch_size=max_batch_size,
                               grad_sqr=max(self.grad_sqr, _MIN_GRAD_SQR),
                               grad_var=self.grad_var / init_batch_size)

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps; :meth:`from_state` restores it."""
        return {"init_batch_size": self.init_batch_size, "smoothing": self.smoothing,
                "biased_sqr": float(self._biased[0]), "biased_var": float(self._biased[1]),
                "unbias": self._unbias, "num_updates": self.num_updates}

    @classmethod
    def from_state(cls, state: dict[str, float]) -> NoiseScaleEstimator:
        out = cls(int(state["init_batch_size"]), float(state["smoothing"]))
        out._biased = np.array([state["biased_sqr"], state["biased_var"]], dtype=float)
        out._unbias = float(state["unbias"])
        out.num_updates = int(state["num_updates"])
        return out
