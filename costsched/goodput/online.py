"""A job's throughput model learned online: the steps measured so far and Pollux's fit.

The simulator's no-oracle mode learns this way (:class:`OnlineThroughput`):

* one mean step per configuration (nodes, replicas, micro-batch, accumulation);
* a refit (:func:`~costsched.goodput.throughput.fit_throughput`, from
  :data:`~costsched.goodput.throughput.DEFAULT_PRIOR`, starting also from the previous
  fit) when a measured step differs by more than :data:`REFIT_CHANGE` from what the
  model predicted for it;
* exploration of sizes not yet measured by Pollux's rule: at most twice the most
  replicas tried (one before any step), :func:`exploration_limit`.

The live scheduler (:class:`~costsched.scheduler.job_models.JobModels`, which keeps
its points in SQLite) shares the prior, the fit and :func:`needs_refit`, but not yet
the rest: it refits from scratch on every new configuration and on a known one whose
mean moved by :data:`REFIT_CHANGE`, and does not limit exploration.
"""

from __future__ import annotations

from collections.abc import Sequence

from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    FittedThroughput,
    ThroughputParams,
    ThroughputPoint,
    fit_throughput,
    predict_step_time_s,
)

REFIT_CHANGE = 0.10
"""A known configuration whose mean step time moved by more than this refits the model."""


def needs_refit(old_step_s: float | None, new_step_s: float) -> bool:
    """Whether a measurement changes the fit: a new configuration, or one that moved."""
    return old_step_s is None or abs(new_step_s - old_step_s) > REFIT_CHANGE * old_step_s


def exploration_limit(max_gpus: int, most_replicas_tried: int) -> int:
    """Most GPUs a policy may try for a job: ``min(max_gpus, 2 x tried)``, at least 1 (Pollux)."""
    return max(1, min(max_gpus, 2 * most_replicas_tried))


class OnlineThroughput:
    """Measured configurations of one job, in memory, and the model fitted to them."""

    def __init__(self, local_bsz_choices: Sequence[int], max_local_bsz: int,
                 prior: ThroughputParams = DEFAULT_PRIOR, fit_cache: dict | None = None) -> None:
        """``fit_cache``: a memo of fits shared between models (jobs of one app in a
        simulation measure the same steps, so many fits repeat exactly)."""
        self.prior = prior
        self._cache = fit_cache
        self.params = prior
        self._choices = list(local_bsz_choices)
        self._max_local_bsz = max_local_bsz
        self._points: dict[tuple[int, int, float, int], ThroughputPoint] = {}
        self.model = FittedThroughput(prior, self._choices, max_local_bsz)
        """What the policy sees: the fit so far (the prior before any step)."""
        self.num_fits = 0

    @property
    def most_replicas_tried(self) -> int:
        return max((key[1] for key in self._points), default=0)

    @property
    def num_points(self) -> int:
        return len(self._points)

    def record(self, point: ThroughputPoint) -> bool:
        """Keep ``point`` as its configuration's mean; refit if it changes the fit.
        Returns whether it refitted."""
        key = (point.num_nodes, point.num_replicas, float(point.local_bsz), point.accum_steps)
        self._points[key] = point
        predicted = None
        if self.num_fits:
            predicted = predict_step_time_s(self.params, point.num_nodes, point.num_replicas,
                                            point.local_bsz, point.accum_steps)
        if not needs_refit(predicted, point.step_time_s):
            return False
        self.params = self._fit()
        self.model = FittedThroughput(self.params, self._choices, self._max_local_bsz)
        self.num_fits += 1
        return True

    def _fit(self) -> ThroughputParams:
        points = sorted(self._points.values(), key=lambda p: (
            p.num_nodes, p.num_replicas, p.local_bsz, p.accum_steps))
        start = self.params if self.num_fits else None
        key = (tuple(points), self.prior, start)
        if self._cache is not None and key in self._cache:
            return self._cache[key]
        params = fit_throughput(points, prior=self.prior, start=start)
        if self._cache is not None:
            self._cache[key] = params
        return params
