"""Pollux's throughput model (OSDI '21, section 3.2): step time from a few fitted constants.

One micro-batch of ``l`` examples per GPU computes in

    T_compute(l) = alpha_c + beta_c * l

and the gradient all-reduce over ``R`` replicas on ``N`` nodes takes

    T_sync(N, R) = 0                                   if R == 1
                 = alpha_r + beta_r * max(R - 2, 0)    if N == 1 < R (within a node)
                 = alpha_n + beta_n * max(R - 2, 0)    if N > 1      (across nodes)

(a ring all-reduce's constant cost plus a retrogression per replica past two).
Sync overlaps the backward pass; the last micro-batch of a step takes

    T_optim = (T_compute^gamma + T_sync^gamma)^(1 / gamma),   1 <= gamma <= 10

(gamma = 1: no overlap, the times add; gamma -> inf: perfect overlap, the max).
With gradient accumulation over ``a`` micro-batches the first ``a - 1`` only compute:

    T_step = (a - 1) * T_compute(l) + T_optim.

The constants are fitted to measured steps by least squares in log space
(:func:`fit_throughput`); what the measurements cannot identify comes from a prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.optimize

from costsched.errors import ConfigError

MAX_GAMMA = 10.0
"""Past this the p-norm is the max for any purpose; Pollux bounds gamma the same way."""
_MIN_PARAM = 1e-8
"""Lower bound of every alpha and beta: keeps the logs finite."""
_MAX_PARAM = 1e4
"""Upper bound of every alpha and beta (seconds): a step of hours is a fitting failure."""
_GAMMA_REG = 1e-3
"""Weight of the pull of gamma towards 1 (a smaller gamma makes the alphas easier to fit)."""
_RETRO_REG = 1e-2
"""Weight of the penalty on beta / alpha: prefer the model that scales better."""
_MIN_COMPUTE_FRACTION = 1e-3
"""A measured compute time is at least this fraction of its step (a sync as long as the
step is a timing artefact, and log(0) would end the fit)."""


@dataclass(frozen=True, kw_only=True)
class ThroughputParams:
    """The constants of Pollux's step-time model (see the module docstring).

    T_step = (a - 1) * T_c + (T_c^gamma + T_s^gamma)^(1/gamma),  T_c = alpha_c + beta_c * l,
    T_s = 0 (R = 1), alpha_r + beta_r * max(R - 2, 0) (N = 1), alpha_n + beta_n * max(R - 2, 0).
    """

    alpha_c: float
    """Seconds of compute per micro-batch that do not depend on its size."""
    beta_c: float
    """Seconds of compute per example of a micro-batch."""
    alpha_n: float
    """Seconds of an all-reduce across nodes (two replicas)."""
    beta_n: float
    """Extra seconds of an all-reduce across nodes per replica past two."""
    alpha_r: float
    """Seconds of an all-reduce within one node (two replicas)."""
    beta_r: float
    """Extra seconds of an all-reduce within one node per replica past two."""
    gamma: float
    """Overlap of compute and sync, 1 (none) to 10 (full)."""

    def __post_init__(self) -> None:
        times = (self.alpha_c, self.beta_c, self.alpha_n, self.beta_n, self.alpha_r, self.beta_r)
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise ConfigError(f"throughput constants must be finite and >= 0, got {self}")
        if not 1.0 <= self.gamma <= MAX_GAMMA:
            raise ConfigError(f"gamma must be within [1, {MAX_GAMMA}], got {self.gamma}")


DEFAULT_PRIOR = ThroughputParams(
    alpha_c=0.1, beta_c=0.01, alpha_r=0.08, beta_r=0.008, alpha_n=0.32, beta_n=0.0048, gamma=1.5,
)
"""What a job is assumed to do before it is measured: 0.1 s + 10 ms per example of
compute; an all-reduce of 80 ms within a node and 320 ms across nodes; each 10% of
that slower per replica past two within a node, 1.5% across nodes; partial overlap.
From fits to the Pollux measurements (16 x 4 T4): the median all-reduce within a node
is about 80 ms, across nodes about four times that, the median gamma about 1.5. Per
replica past two, the fits to every measured placement of each app
(``bench/fitted_model.py``, second table) give 0-15.5% of alpha_r within a node and
1.1-7.5% of alpha_n across nodes (median about 2.3% each); 10% within is kept
pessimistic. The across-node 1.5% (10% before) was tuned with
``bench/policy_tuning.py`` on workloads 1-4 (see the README).
Once a job's own sync is measured, the unmeasured sync constants keep these ratios at
the job's scale (see :func:`fit_throughput`)."""

_NAMES = ("alpha_c", "beta_c", "alpha_n", "beta_n", "alpha_r", "beta_r", "gamma")


@dataclass(frozen=True, kw_only=True)
class ThroughputPoint:
    """One measured configuration: the mean of its optimizer steps."""

    num_nodes: int
    """Nodes the job's replicas were on."""
    num_replicas: int
    """GPUs (data-parallel replicas) in all."""
    local_bsz: float
    """Examples per GPU per micro-batch."""
    step_time_s: float
    """Seconds per optimizer step (all its micro-batches)."""
    sync_time_s: float
    """Seconds of that step spent in the gradient all-reduce; the rest is compute."""
    accum_steps: int = 1
    """Micro-batches per optimizer step (1: no accumulation)."""
    placement: tuple[int, ...] = ()
    """GPUs on each node when known (the model needs only the counts); () when not."""

    def __post_init__(self) -> None:
        if self.placement and (len(self.placement) != self.num_nodes
                               or sum(self.placement) != self.num_replicas
                               or min(self.placement) < 1):
            raise ConfigError(f"placement {self.placement} does not match the counts of {self}")
        if not 1 <= self.num_nodes <= self.num_replicas:
            raise ConfigError(f"need 1 <= num_nodes <= num_replicas, got {self}")
        if self.local_bsz <= 0 or self.accum_steps < 1:
            raise ConfigError(f"need local_bsz > 0 and accum_steps >= 1, got {self}")
        if not 0 <= self.sync_time_s <= self.step_time_s or self.step_time_s <= 0:
            raise ConfigError(f"need 0 <= sync_time_s <= step_time_s, 0 < step, got {self}")

    @property
    def compute_time_s(self) -> float:
        """Seconds of one micro-batch's compute: (step - sync) / accum_steps."""
        return (self.step_time_s - self.sync_time_s) / self.accum_steps

    @property
    def optim_time_s(self) -> float:
        """Seconds of the last micro-batch, the one that syncs: compute + sync."""
        return self.compute_time_s + self.sync_time_s


def _sync_of_shape(p: ThroughputParams, extra, across, within):
    """T_sync, elementwise, from the replicas past two and whether the replicas are across
    nodes / within one node (neither: one replica, no sync)."""
    return np.where(across, p.alpha_n + p.beta_n * extra,
                    np.where(within, p.alpha_r + p.beta_r * extra, 0.0))


def _optim_s(p: ThroughputParams, compute, sync):
    """T_optim from T_compute and T_sync, elementwise."""
    # Scaled p-norm: exact for any gamma without overflowing at gamma = 10.
    top = np.maximum(compute, sync)
    ratio = np.minimum(compute, sync) / np.where(top > 0, top, 1.0)
    return top * (1.0 + ratio**p.gamma) ** (1.0 / p.gamma)


def predict_step_time_s(params: ThroughputParams, num_nodes: int, num_replicas: int,
                        local_bsz: float, accum_steps: int = 1) -> float:
    """Seconds per optimizer step: (a - 1) * T_compute(l) + T_optim(N, R, l).

    ``local_bsz`` is the micro-batch per GPU; a step processes
    ``num_replicas * local_bsz * accum_steps`` examples.
    """
    if not 1 <= num_nodes <= num_replicas or accum_steps < 1 or local_bsz <= 0:
        raise ValueError(f"bad configuration: N={num_nodes} R={num_replicas} "
                         f"l={local_bsz} a={accum_steps}")
    # The fit's arithmetic (:func:`_objective`) for one configuration, in plain floats: a
    # policy asks this for every batch candidate of every job at every size, and array
    # overhead dominated. The same operations in the same order, so the same doubles up to
    # the last bit or two of the power, which numpy's vectorised one may round otherwise
    # on some CPUs (AVX-512).
    p = params
    compute = p.alpha_c + p.beta_c * float(local_bsz)
    extra = max(num_replicas - 2, 0)
    if num_nodes > 1:
        sync = p.alpha_n + p.beta_n * extra
    else:
        sync = p.alpha_r + p.beta_r * extra if num_replicas > 1 else 0.0
    top = max(compute, sync)
    ratio = min(compute, sync) / (top if top > 0 else 1.0)
    optim = top * (1.0 + ratio**p.gamma) ** (1.0 / p.gamma)
    return (accum_steps - 1) * compute + optim


@dataclass(frozen=True)
class _Free:
    """Which constants the measurements identify (the rest come from the prior)."""

    names: tuple[str, ...]
    fixed: dict[str, float]


def _identifiable(points: Sequence[ThroughputPoint], prior: ThroughputParams) -> _Free:
    nodes = np.array([p.num_nodes for p in points])
    reps = np.array([p.num_replicas for p in points])
    within, across = (nodes == 1) & (reps > 1), nodes > 1
    fixed: dict[str, float] = {}
    if len({p.local_bsz for p in points}) == 1:
        # One batch size cannot split compute into its two terms: half each (as Pollux).
        fixed["alpha_c"] = float(np.mean([p.compute_time_s for p in points])) / 2
    if not within.any():
        fixed |= {"alpha_r": prior.alpha_r, "beta_r": prior.beta_r}
    elif not (within & (reps > 2)).any():
        fixed["beta_r"] = prior.beta_r
    if not across.any():
        fixed |= {"alpha_n": prior.alpha_n, "beta_n": prior.beta_n}
    elif not (across & (reps > 2)).any():
        fixed["beta_n"] = prior.beta_n
    if not (within | across).any():
        fixed["gamma"] = prior.gamma
    return _Free(names=tuple(n for n in _NAMES if n not in fixed), fixed=fixed)


def _values(x: np.ndarray, free: _Free) -> dict[str, float]:
    """All seven constants: the fixed ones, and the free ones from their logs ``x``."""
    values = dict(free.fixed) | {n: float(v) for n, v in zip(free.names, np.exp(x), strict=True)}
    values["gamma"] = min(max(values["gamma"], 1.0), MAX_GAMMA)  # exp(log(10)) may round up
    return values


def _objective(x: np.ndarray, free: _Free, data: dict[str, np.ndarray]) -> float:
    """RMS log error of compute and of optim time, plus Pollux's two regularisers.

    loss = rmse(log T_c) + rmse(log T_optim) + 1e-3 (gamma - 1)^2
           + 1e-2 sum over fitted retrogressions of (beta / alpha)^2
    """
    values = _values(x, free)
    p = ThroughputParams(**values)
    # np.mean is add.reduce / n; the shapes come worked out once from :func:`_fit_data`
    # (the optimiser calls this some hundred times a fit).
    compute = p.alpha_c + p.beta_c * data["bsz"]
    sync = _sync_of_shape(p, data["extra"], data["across"], data["within"])
    optim = _optim_s(p, compute, sync)
    count = len(compute)
    err_c = np.sqrt(np.add.reduce((np.log(compute) - data["log_compute"]) ** 2) / count)
    err_o = np.sqrt(np.add.reduce((np.log(optim) - data["log_optim"]) ** 2) / count)
    reg = _GAMMA_REG * (p.gamma - 1.0) ** 2
    for beta, alpha in (("beta_n", "alpha_n"), ("beta_r", "alpha_r")):
        if beta in free.names:
            reg += _RETRO_REG * (values[beta] / values[alpha]) ** 2
    return float(err_c + err_o + reg)


def _fit_data(points: Sequence[ThroughputPoint]) -> dict[str, np.ndarray]:
    step = np.array([p.step_time_s for p in points])
    compute = np.array([p.compute_time_s for p in points])
    compute = np.maximum(compute, _MIN_COMPUTE_FRACTION * step)
    optim = np.array([p.optim_time_s for p in points])
    nodes = np.array([p.num_nodes for p in points])
    replicas = np.array([p.num_replicas for p in points])
    return {"extra": np.maximum(replicas - 2, 0), "across": nodes > 1, "within": replicas > 1,
            "bsz": np.array([p.local_bsz for p in points], dtype=float),
            "log_compute": np.log(compute), "log_optim": np.log(np.maximum(optim, compute))}


def _start(points: Sequence[ThroughputPoint], free: _Free, prior: ThroughputParams) -> dict:
    """A first guess from the data: compute by a line through (l, T_c), sync by medians."""
    bsz = np.array([p.local_bsz for p in points], dtype=float)
    compute = np.array([p.compute_time_s for p in points])
    guess = asdict(prior)
    if np.ptp(bsz) > 0:
        slope = float(np.polyfit(bsz, compute, 1)[0])
        guess["beta_c"] = max(slope, 1e-3 * compute.mean() / bsz.mean())
    else:
        guess["beta_c"] = compute.mean() / 2 / bsz.mean()
    guess["alpha_c"] = max(compute.mean() - guess["beta_c"] * bsz.mean(), 1e-3 * compute.mean())
    for group, alpha in ((lambda p: p.num_nodes == 1 < p.num_replicas, "alpha_r"),
                         (lambda p: p.num_nodes > 1, "alpha_n")):
        syncs = [p.sync_time_s for p in points if group(p)]
        if syncs:
            guess[alpha] = max(float(np.median(syncs)), 1e-3 * compute.mean())
            guess["beta" + alpha[5:]] = 0.1 * guess[alpha]
    return guess | free.fixed


def _bounds(name: str) -> tuple[float, float]:
    if name == "gamma":
        return 0.0, math.log(MAX_GAMMA)
    return math.log(_MIN_PARAM), math.log(_MAX_PARAM)


def _fill_in(params: ThroughputParams, free: _Free, prior: ThroughputParams) -> ThroughputParams:
    """Sync constants the data could not identify: the prior's, rescaled to this job.

    The scale is a fitted alpha over the prior's (within a node first, else across
    nodes, else 1), so a job whose measured all-reduce is twice the prior's gets
    twice the prior's unmeasured ones. An all-reduce across nodes is never faster than
    within one (alpha_n >= 1.1 alpha_r when across is unmeasured), as Pollux. Its
    retrogression per replica may be: within a node it spans at most the node's GPUs,
    and a steep slope over the third and fourth GPU (up to 15.5% of alpha_r per replica
    in the Pollux fits, against at most 7.5% of alpha_n across nodes) carried across
    nodes by Pollux's bound beta_n >= 1.1 beta_r made jobs look unscalable there.
    """
    scale = 1.0
    if "alpha_r" in free.names:
        scale = params.alpha_r / prior.alpha_r
    elif "alpha_n" in free.names:
        scale = params.alpha_n / prior.alpha_n
    sync = ("alpha_n", "beta_n", "alpha_r", "beta_r")
    values = asdict(params) | {n: getattr(prior, n) * scale for n in sync if n in free.fixed}
    if "alpha_n" not in free.names:
        values["alpha_n"] = max(values["alpha_n"], 1.1 * values["alpha_r"])
    return ThroughputParams(**values)


def fit_throughput(points: Sequence[ThroughputPoint],
                   prior: ThroughputParams = DEFAULT_PRIOR,
                   start: ThroughputParams | None = None) -> ThroughputParams:
    """The constants that best explain ``points``; ``prior`` where they say nothing.

    Minimises rmse(log T_c) + rmse(log T_optim) + 1e-3 (gamma - 1)^2 + 1e-2 (beta / alpha)^2
    over the identifiable constants (L-BFGS-B on their logs, within bounds). A
    constant is identifiable when some point depends on it: compute always (alpha_c
    only with two or more batch sizes), alpha_r with replicas on one node, beta_r
    with more than two there, alpha_n / beta_n likewise across nodes, gamma with
    any sync. The rest come from ``prior`` (see :func:`_fill_in`); no points: ``prior``.

    The search starts from a guess made from the data, once at gamma 1 and once at 3;
    ``start`` (a previous fit, when refitting after one more point) replaces the second:
    near the answer it converges in a few iterations, and the data's own guess still
    finds a constant the new point moved far from the previous fit.
    """
    if not points:
        return prior
    free = _identifiable(points, prior)
    data = _fit_data(points)
    guess = _start(points, free, prior)
    starts = [guess | ({"gamma": gamma} if "gamma" in free.names else {})
              for gamma in (1.0, 3.0)]
    if start is not None:
        starts = [starts[0], asdict(start) | free.fixed]
    best = None
    for first in starts:
        x0 = [math.log(max(first[n], _MIN_PARAM)) for n in free.names]
        result = scipy.optimize.minimize(
            _objective, np.clip(x0, *zip(*map(_bounds, free.names), strict=True)),
            args=(free, data), method="L-BFGS-B", bounds=[_bounds(n) for n in free.names])
        if best is None or result.fun < best.fun:
            best = result
    return _fill_in(ThroughputParams(**_values(best.x, free)), free, prior)


class FittedThroughput:
    """A :class:`~costsched.policy.snapshot.ThroughputModel` from fitted constants.

    A per-GPU batch ``l`` above ``max_local_bsz`` runs as ``a = ceil(l / max_local_bsz)``
    micro-batches of ``l / a`` (gradient accumulation), as the simulator does.
    """

    def __init__(self, params: ThroughputParams, local_bsz_choices: Sequence[int],
                 max_local_bsz: int) -> None:
        choices = np.array(sorted({int(b) for b in local_bsz_choices}))
        if not choices.size or choices[0] < 1 or max_local_bsz < 1:
            raise ConfigError("need at least one local batch size >= 1 and max_local_bsz >= 1")
        self.params = params
        self.max_local_bsz = int(max_local_bsz)
        self._choices = choices
        self.cache_key = ("fitted", params, tuple(choices.tolist()), self.max_local_bsz)
        """Equal for models that predict the same (a policy scores such jobs together)."""

    @property
    def max_atomic_bsz(self) -> int:
        """Largest micro-batch per GPU; the policy may ask for multiples of it (accumulation)."""
        return self.max_local_bsz

    def local_bsz_choices(self) -> np.ndarray:
        return self._choices.copy()

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        """Seconds per step with ``placement`` GPUs per node at ``local_bsz`` per GPU."""
        nodes = [n for n in placement if n > 0]
        if not nodes:
            raise ValueError("empty placement has no step time")
        accum = max(1, math.ceil(local_bsz / self.max_local_bsz - 1e-9))
        return predict_step_time_s(self.params, len(nodes), sum(nodes), local_bsz / accum, accum)

    def __repr__(self) -> str:
        return (f"FittedThroughput({self.params}, local_bsz_choices={self._choices.tolist()}, "
                f"max_local_bsz={self.max_local_bsz})")
