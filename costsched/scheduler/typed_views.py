"""Live jobs as seen on each GPU model of a mixed cluster, from the steps pooled there.

On nodes of several GPU models, ``cost-aware`` places each job by what it does on each
model (:mod:`~costsched.policy.hetero`), which a live job tells only through the steps
it measures. A job that sets ``training.measurements_key`` pools its steps under the
GPU model they ran on (:func:`~costsched.scheduler.job_models.share_key`); once every
GPU model in the cluster has steps pooled under the job's key, the job is described on
each model by Pollux's model fitted to that model's pool, at its fixed global batch, and
offered there at most ``EXPLORATION_FACTOR`` (8) times the most workers that pool has
measured (Pollux's exploration rule per fit, as in simulation: a size is offered only
within reach of what the fit that predicts it has seen), within its declared range; the
view's ``max_gpus`` is then the most of any model. Until then, and for a job without a
key or with an adaptive batch, it is described on no model, and the policy scores every
model alike for it (still keeping it on one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from costsched.config.job import JobConfig
from costsched.goodput.online import OnlineThroughput, explored_max_gpus
from costsched.policy.snapshot import JobView, NodeView, TypeOption
from costsched.scheduler.job_models import JobModel, JobModels, share_key
from costsched.scheduler.policy_view import fixed_batch_throughput


class TypedViews:
    """One learner per pool, fed the pool's steps as they change (refitting as a job's own
    learner does: when a step is off its prediction), and the views built on them."""

    def __init__(self, job_models: JobModels, policy: object = None):
        self.job_models = job_models
        self.enabled = bool(getattr(policy, "heterogeneity_aware", False))
        """Only a policy that reads per-model views gets them (and pays for the fits)."""
        self._learners: dict[str, OnlineThroughput] = {}
        self._this_round: dict[str, JobModel | None] = {}  # each pool read once a round

    def add(self, views: Sequence[JobView], configs: Sequence[JobConfig],
            nodes: Iterable[NodeView]) -> list[JobView]:
        """``views`` (their jobs' ``configs`` in the same order) with ``by_gpu_model`` set
        for every job whose key has steps pooled on each GPU model of ``nodes`` (two or
        more; otherwise the views as they are)."""
        models = sorted({n.gpu_model for n in nodes})
        self._this_round = {}
        if len(models) < 2 or not self.enabled:
            return list(views)
        return [view.on_gpu_models(options) if (
            options := self.options(view, config, models)) else view
                for view, config in zip(views, configs, strict=True)]

    def options(self, view: JobView, config: JobConfig,
                models: Sequence[str]) -> dict[str, TypeOption]:
        """``view``'s job on each of ``models``; empty unless every one has its pool."""
        if config.training.adaptive_batch or config.training.measurements_key is None:
            return {}
        fitted = [self.pool_model(share_key(config, m)) for m in models]
        if any(model is None for model in fitted):
            return {}
        return {m: TypeOption(throughput=fixed_batch_throughput(model, config),
                              max_gpus=explored_max_gpus(
                                  view.min_gpus, view.requested_gpus,
                                  model.most_replicas_tried * view.gpus_per_worker))
                for m, model in zip(models, fitted, strict=True)}

    def pool_model(self, key: str) -> JobModel | None:
        """Pollux's model fitted to the steps pooled under ``key``; None: none pooled."""
        if key not in self._this_round:
            self._this_round[key] = self._pool_model(key)
        return self._this_round[key]

    def _pool_model(self, key: str) -> JobModel | None:
        points = self.job_models.pooled(key)
        if not points:
            return None
        learner = self._learners.get(key)
        if learner is None:
            learner = self._learners[key] = OnlineThroughput(prior=self.job_models.prior)
            learner.adopt(points)
        else:
            for point in points:  # the same mean again changes nothing
                learner.record(point)
        return JobModel.of(learner)
