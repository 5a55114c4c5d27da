"""A job's throughput model learned online: the steps measured so far and Pollux's fit.

One learner, :class:`OnlineThroughput`, for the simulator's no-oracle mode and the live
scheduler (:class:`~costsched.scheduler.job_models.JobModels`, which keeps its points
and fit in SQLite and rebuilds the learner from them with :meth:`OnlineThroughput.restore`):

* one mean step per configuration (nodes, replicas, micro-batch, accumulation), the
  latest replacing the one before;
* a refit (:func:`~costsched.goodput.throughput.fit_throughput`, from the prior,
  :data:`~costsched.goodput.throughput.DEFAULT_PRIOR` unless given) on the first
  measurement, and later when a measured step differs by more than :data:`REFIT_CHANGE`
  from what the fit predicted for it (:func:`needs_refit`); a refit starts also from
  the previous fit (warm start);
* exploration of sizes not yet measured, after Pollux's rule: at most
  a factor (:data:`EXPLORATION_FACTOR` unless given) times the most replicas tried
  (before any step, what its user asked for, at most :data:`FIRST_GPUS`:
  :func:`first_gpus`), never below the job's minimum, :func:`explored_max_gpus`;
  applied only where the policy sizes jobs itself;
* optionally, a new job starts from the steps earlier jobs of the same model measured on
  the same hardware (:class:`SharedMeasurements`, :meth:`OnlineThroughput.adopt`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    ThroughputParams,
    ThroughputPoint,
    fit_throughput,
    predict_step_time_s,
)

REFIT_CHANGE = 0.10
"""A measured step more than this far (relative) from the fit's prediction refits the model."""

EXPLORATION_FACTOR = 8
"""The default factor: a learning job is offered at most this many times the most
replicas it has tried (callers pass their own ``factor``; the simulator's is
:attr:`~costsched.sim.simulator.SimConfig.explore_factor`).
Pollux's rule uses 2; the fit's prior makes sizes past the measured ones look no better
than they are, and each doubling costs a restart, so 1, 8, 64 reaches a good size with
fewer restarts (mean JCT on the Pollux workloads, load 1.0: 2x 1.070, 4x 1.001, 8x 0.988,
16x 1.016 times published Pollux; see the README)."""

FIRST_GPUS = 4
"""The most GPUs a learning job is offered before its first step (Pollux's rule: 1):
what its user asked for, up to one node of four (:func:`first_gpus`). The prior prices
an all-reduce within a node as cheap, so a job started on one GPU paid a restart to
grow; and a job asked for on one GPU is most likely one that does not scale (every ncf
job offered four restarted once to leave them; in the Pollux traces ncf jobs ask for 1
GPU, the other apps for 4 to 48). Tuned with ``bench/policy_tuning.py`` beside the
prior's across-node retrogression (see the README): the ask with no cap was worse."""

ConfigKey = tuple[int, int, float, int]
"""(num_nodes, num_replicas, local_bsz, accum_steps): one measured configuration."""


def needs_refit(predicted_step_s: float | None, new_step_s: float) -> bool:
    """Whether a measurement changes the fit: nothing fitted yet, or a misprediction."""
    return (predicted_step_s is None
            or abs(new_step_s - predicted_step_s) > REFIT_CHANGE * predicted_step_s)


def first_gpus(requested_gpus: int) -> int:
    """The most GPUs a job is offered before any step: its ``requested_gpus`` (what its
    user asked for), at least 1 and at most :data:`FIRST_GPUS`."""
    return min(FIRST_GPUS, max(1, requested_gpus))


def exploration_limit(max_gpus: int, most_replicas_tried: int,
                      factor: int = EXPLORATION_FACTOR, first: int = FIRST_GPUS) -> int:
    """Most GPUs a policy may try for a job: ``min(max_gpus, factor x tried)``, or
    ``min(max_gpus, first)`` before any is tried; at least 1 (Pollux's rule is
    ``factor`` = 2, ``first`` = 1)."""
    if factor < 1 or first < 1:
        raise ValueError(f"the exploration factor and first size must be at least 1, "
                         f"got {factor} and {first}")
    return max(1, min(max_gpus, factor * most_replicas_tried if most_replicas_tried else first))


def explored_max_gpus(min_gpus: int, max_gpus: int, most_gpus_tried: int,
                      factor: int = EXPLORATION_FACTOR, first: int = FIRST_GPUS) -> int:
    """The largest size a learning job is offered: Pollux's :func:`exploration_limit`,
    but never below its ``min_gpus`` (a job cannot run smaller than that)."""
    return max(min_gpus, exploration_limit(max_gpus, most_gpus_tried, factor, first))


def config_key(point: ThroughputPoint) -> ConfigKey:
    return (point.num_nodes, point.num_replicas, float(point.local_bsz), point.accum_steps)


class OnlineThroughput:
    """Measured configurations of one job, in memory, and the model fitted to them."""

    def __init__(self, prior: ThroughputParams = DEFAULT_PRIOR,
                 fit_cache: dict | None = None) -> None:
        """``fit_cache``: a memo of fits shared between learners (jobs of one app in a
        simulation measure the same steps, so many fits repeat exactly)."""
        self.prior = prior
        self._cache = fit_cache
        self.params = prior
        """The fit so far (the prior before any step)."""
        self._points: dict[ConfigKey, ThroughputPoint] = {}
        self.num_fits = 0
        """Refits made by this learner (a restored fit counts as one)."""
        self.num_points_fitted = 0
        """Configurations the current fit used (0: the prior only)."""

    @classmethod
    def restore(cls, points: Iterable[ThroughputPoint], params: ThroughputParams | None, *,
                num_points_fitted: int, prior: ThroughputParams = DEFAULT_PRIOR
                ) -> OnlineThroughput:
        """A learner as a store left it: its measured ``points`` and its last fit
        (``None``: not fitted yet), from which the next refit starts."""
        learner = cls(prior)
        learner._points = {config_key(p): p for p in points}
        if params is not None:
            learner.params, learner.num_fits = params, 1
            learner.num_points_fitted = num_points_fitted
        return learner

    @property
    def points(self) -> list[ThroughputPoint]:
        """Every configuration's latest mean, in a fixed order (the fit's input)."""
        return [self._points[key] for key in sorted(self._points)]

    @property
    def most_replicas_tried(self) -> int:
        return max((key[1] for key in self._points), default=0)

    @property
    def num_points(self) -> int:
        return len(self._points)

    def max_gpus(self, min_gpus: int, max_gpus: int, gpus_per_replica: int = 1,
                 factor: int = EXPLORATION_FACTOR, first: int = FIRST_GPUS) -> int:
        """The largest size to offer the job now (:func:`explored_max_gpus`)."""
        return explored_max_gpus(min_gpus, max_gpus, self.most_replicas_tried * gpus_per_replica,
                                 factor, first)

    def predict_step_time_s(self, point: ThroughputPoint) -> float | None:
        """The fit's step time at ``point``'s configuration; None before any fit."""
        if not self.num_fits:
            return None
        return predict_step_time_s(self.params, point.num_nodes, point.num_replicas,
                                   point.local_bsz, point.accum_steps)

    def record(self, point: ThroughputPoint) -> bool:
        """Keep ``point`` as its configuration's mean; refit if it changes the fit.
        Returns whether it refitted. The same point again changes nothing (a live
        scheduler reads a job's last measurement every round)."""
        key = config_key(point)
        if self.num_fits and self._points.get(key) == point:
            return False
        self._points[key] = point
        if not needs_refit(self.predict_step_time_s(point), point.step_time_s):
            return False
        self._refit()
        return True

    def adopt(self, points: Iterable[ThroughputPoint]) -> bool:
        """Take the configurations of ``points`` this learner has not measured itself
        (what other jobs of the same model measured on the same hardware) and refit if
        any is new. Returns whether it refitted."""
        new = {config_key(p): p for p in points if config_key(p) not in self._points}
        if not new:
            return False
        self._points.update(new)
        self._refit()
        return True

    def _refit(self) -> None:
        self.params = self._fit()
        self.num_fits += 1
        self.num_points_fitted = len(self._points)

    def _fit(self) -> ThroughputParams:
        points = self.points
        start = self.params if self.num_fits else None
        key = (tuple(points), self.prior, start)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        params = fit_throughput(points, prior=self.prior, start=start)
        if self._cache is not None:
            self._cache[key] = params
        return params


class SharedMeasurements:
    """Step measurements pooled by model: jobs that train the same model on the same
    hardware (a key the caller chooses) step alike, so a new one may start from what the
    jobs before it measured instead of the prior (:meth:`OnlineThroughput.adopt`). Each
    configuration keeps its latest mean, whichever job measured it."""

    def __init__(self) -> None:
        self._pools: dict[Hashable, dict[ConfigKey, ThroughputPoint]] = {}

    def add(self, key: Hashable, points: Iterable[ThroughputPoint]) -> None:
        """Pool ``points`` (a learner's :attr:`OnlineThroughput.points`) under ``key``."""
        self._pools.setdefault(key, {}).update((config_key(p), p) for p in points)

    def points(self, key: Hashable) -> list[ThroughputPoint]:
        """Every configuration measured under ``key``, in a fixed order."""
        pool = self._pools.get(key, {})
        return [pool[k] for k in sorted(pool)]
