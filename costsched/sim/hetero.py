"""The simulator on a cluster of several GPU types (Sia's setting).

As :class:`~costsched.sim.simulator.Simulator`, with these rules:

* nodes come in pools (:class:`~costsched.sim.gpu_types.NodePool`), one GPU type each,
  each type with its own measured profile, per-GPU batch cap and catalog price;
* a job never mixes types in one allocation (a decision that does is an error); moving
  to another type is a placement change, hence a restart, of ``restart_s_by_app[app]``
  seconds when given (Sia's per-app times), else ``SimConfig.restart_s``;
* a job runs at the step time of the type it is on; its dollars are the GPU-seconds it
  held on each type x that type's catalog price per GPU, and each stretch is recorded
  (``SimJobResult.intervals``), so every dollar traces to a catalog row;
* the cluster costs the sum of its nodes' catalog prices for as long as it runs.

What the policy sees: without ``oracle``, per (job, type) a learner
(:class:`~costsched.goodput.online.OnlineThroughput`, same prior and fit as the
one-type simulator) fitted to the steps the job ran on that type, plus Sia's bootstrap:
when the job arrives, one GPU of every type measured at that type's smallest and largest
per-GPU batch (that profiling's GPU time is neither simulated nor charged). On each
type it is offered at most ``SimConfig.explore_factor`` (8) times the most GPUs its
learner for that type has measured (Pollux's exploration rule, factor 2 there, per
learner as in the one-type simulator: a size is offered only within reach of what the
fit that predicts it has seen); the bootstrap's one-GPU points count as measured, so
from its arrival a job is offered up to 8 GPUs of each type, not the one-type
simulator's first size (:func:`~costsched.goodput.online.first_gpus`; see the README).
With ``aware=False`` (the heterogeneity-unaware baseline) the policy gets one learner
per job, fed whatever type the job ran on, and no per-type views (with ``oracle``: the
first pool's profile).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from costsched.cost.prices import SECONDS_PER_HOUR, usd_over
from costsched.errors import ConfigError
from costsched.goodput.online import OnlineThroughput, explored_max_gpus, first_gpus
from costsched.goodput.throughput import FittedThroughput, ThroughputPoint
from costsched.policy.drive import gpu_range
from costsched.policy.registry import Policy
from costsched.policy.snapshot import JobView, NodeView, TypeOption
from costsched.policy.validate import InvalidDecision
from costsched.sim.gpu_types import NodePool
from costsched.sim.profiles import AppProfile
from costsched.sim.simulator import (
    ProfileThroughput,
    SimConfig,
    SimJob,
    SimResult,
    Simulator,
    max_useful_gpus,
)
from costsched.sim.workload import JobSpec


class HeteroSimulator(Simulator):
    """Replays one workload under one elastic policy on pools of several GPU types."""

    def __init__(self, *, config: SimConfig, pools: Sequence[NodePool],
                 profiles: Mapping[str, Mapping[str, AppProfile]], workload: Sequence[JobSpec],
                 policy: Policy, aware: bool = True,
                 restart_s_by_app: Mapping[str, float] | None = None) -> None:
        if not pools:
            raise ConfigError("a heterogeneous cluster needs at least one node pool")
        if config.autoscale is not None or not config.elastic:
            raise ConfigError("a heterogeneous cluster is fixed and needs an elastic policy "
                              "(cost-aware or cost-aware-unaware)")
        models = [p.instance.gpu_model for p in pools]
        if len(set(models)) != len(models):
            raise ConfigError(f"each pool needs its own GPU model, got {models}")
        missing = [p.gpu_type for p in pools if p.gpu_type not in profiles]
        if missing:
            raise ConfigError(f"no profiles for GPU type(s) {missing}")
        self.pools = {p.instance.gpu_model: p for p in pools}
        self.typed = profiles
        self.aware = aware
        self.restart_s_by_app = dict(restart_s_by_app or {})
        first = profiles[pools[0].gpu_type]
        super().__init__(config=config, profiles=dict(first), workload=workload, policy=policy)
        self.nodes = [NodeView(node_id=f"{p.gpu_type}-{i}", gpu_model=p.instance.gpu_model,
                               num_gpus=p.instance.num_gpus_per_node,
                               usd_per_hour=p.instance.node_usd_per_hour(config.spot),
                               spot=config.spot)
                      for p in pools for i in range(p.num_nodes)]
        self._model_of_node = {n.node_id: n.gpu_model for n in self.nodes}
        self._learners: dict[tuple[str, str], OnlineThroughput] = {}
        self._fits: dict[tuple[str, str], FittedThroughput] = {}
        self._on: dict[str, str] = {}
        """Job -> GPU model it holds now (absent: it holds none)."""
        self._gpu_s: dict[tuple[str, str], float] = {}
        self._intervals: dict[str, list[list]] = {j.spec.name: [] for j in self.jobs}
        self._profiled: set[str] = set()
        if not aware:
            self._shared = None
        if aware and not config.oracle:
            cache: dict = {}
            for job in self.jobs:
                for model in self.pools:
                    self._learners[(job.spec.name, model)] = OnlineThroughput(fit_cache=cache)
                    self._fits[(job.spec.name, model)] = self._typed_fit(job, model)
                self._use_model(job, next(iter(self.pools)))

    def _app(self, job: SimJob, model: str) -> AppProfile:
        return self.typed[self.pools[model].gpu_type][job.spec.application]

    def _typed_fit(self, job: SimJob, model: str) -> FittedThroughput:
        app = self._app(job, model)
        learner = self._learners[(job.spec.name, model)]
        return FittedThroughput(learner.params, app.local_bsz_choices.tolist(), app.max_local_bsz)

    def _share_key(self, job: SimJob, model: str | None = None) -> object:
        """The jobs of its app on ``model``, by default the one it runs on (steps differ by
        model)."""
        return job.spec.application, model or self._on.get(job.spec.name,
                                                           next(iter(self.pools)))

    def _arrived(self, job: SimJob) -> SimJob:
        """Aware, with shared measurements: each model's learner starts from what earlier
        jobs of its app measured on that model. (The unaware baseline, one learner fed
        every model, shares nothing: it could not tell the models' steps apart.)"""
        if self._shared is None:
            return job
        name = job.spec.name
        for model in self.pools:
            points = self._shared.points(self._share_key(job, model))
            if self._learners[(name, model)].adopt(points):
                self._fits[(name, model)] = self._typed_fit(job, model)
        self._use_model(job, self._on.get(name, next(iter(self.pools))))
        return job

    def _use_model(self, job: SimJob, model: str) -> None:
        """Run ``job`` on ``model`` from now: its profile, and (aware) that type's learner."""
        job.app = self._app(job, model)
        if (job.spec.name, model) in self._learners:
            job.learned = self._learners[(job.spec.name, model)]
            job.fitted = self._fits[(job.spec.name, model)]

    def _view(self, job: SimJob, time_s: float) -> JobView:
        view = super()._view(job, time_s)
        name = job.spec.name
        spent = sum(usd_over(p.instance.gpu_usd_per_hour(self.config.spot),
                             self._gpu_s.get((name, m), 0.0)) for m, p in self.pools.items())
        restart_s = self.restart_s_by_app.get(job.spec.application)
        view = dataclasses.replace(view, spent_usd=spent, usd_per_gpu_hour=None,
                                   restart_s=restart_s)
        if not self.aware:
            return view
        options = {}
        for model in self.pools:
            app = self._app(job, model)
            lo, hi = gpu_range(elastic=True, requested_gpus=job.spec.num_replicas,
                               elastic_range=(1, max(max_useful_gpus(app),
                                                     job.spec.num_replicas)))
            if self.config.oracle:
                options[model] = TypeOption(throughput=ProfileThroughput(app), max_gpus=hi)
            else:
                tried = self._learners[(name, model)].most_replicas_tried
                options[model] = TypeOption(throughput=self._fits[(name, model)],
                                            max_gpus=explored_max_gpus(
                                                lo, hi, tried, self.config.explore_factor,
                                                first_gpus(job.spec.num_replicas)))
        return view.on_gpu_models(options)

    def _profile_on_arrival(self, job: SimJob) -> None:
        """Sia's bootstrap: one GPU of each type, at the type's smallest and largest per-GPU
        batch, measured once when the job arrives (its GPU time is not simulated)."""
        name = job.spec.name
        self._profiled.add(name)
        for model in self.pools:
            app, learner = self._app(job, model), self._learners[(name, model)]
            for local in {int(app.local_bsz_choices[0]), int(app.local_bsz_choices[-1])}:
                _, step_s, sync_s = app.accumulated_step((1,), local)
                learner.record(ThroughputPoint(num_nodes=1, num_replicas=1, local_bsz=local,
                                               accum_steps=1, step_time_s=step_s,
                                               sync_time_s=sync_s, placement=(1,)))
            self._fits[(name, model)] = self._typed_fit(job, model)

    def _schedule(self, active: list[SimJob], time_s: float, round_index: int) -> None:
        if self._learners:
            for job in active:
                if job.spec.name not in self._profiled:
                    self._profile_on_arrival(job)
                    self._use_model(job, self._on.get(job.spec.name, next(iter(self.pools))))
        before = {j.spec.name: j.num_placements for j in active}
        super()._schedule(active, time_s, round_index)
        for job in active:
            name = job.spec.name
            models = {self._model_of_node[n] for n in job.placement}
            if len(models) > 1:
                raise InvalidDecision(f"job {name} mixes GPU models {sorted(models)} in one "
                                      "allocation")
            if not models:
                self._on.pop(name, None)
                continue
            model = models.pop()
            self._on[name] = model
            self._use_model(job, model)
            restart_s = self.restart_s_by_app.get(job.spec.application)
            if job.num_placements > before[name] and restart_s is not None:
                job.restart_left_s = restart_s

    def _advance(self, job: SimJob, time_s: float) -> None:
        name, gpu_s = job.spec.name, job.gpu_s
        fitted = job.fitted
        super()._advance(job, time_s)
        model = self._on.get(name)
        held = job.gpu_s - gpu_s
        if model is None or held <= 0:
            return
        if job.fitted is not fitted and (name, model) in self._fits:
            self._fits[(name, model)] = job.fitted
        self._gpu_s[(name, model)] = self._gpu_s.get((name, model), 0.0) + held
        replicas = sum(job.placement.values())
        end_s = time_s + held / replicas
        stretches = self._intervals[name]
        row = [time_s, end_s, self.pools[model].instance_name, replicas]
        if stretches and abs(stretches[-1][1] - time_s) < 1e-6 and stretches[-1][2:] == row[2:]:
            stretches[-1][1] = end_s
        else:
            stretches.append(row)

    def _cluster_usd(self, node_s: float) -> float:
        elapsed_s = node_s / max(len(self.nodes), 1)  # a fixed cluster: every node, all along
        return sum(usd_over(p.instance.node_usd_per_hour(self.config.spot),
                            p.num_nodes * elapsed_s) for p in self.pools.values())

    def _result(self, timeline: list, node_s: float) -> SimResult:
        base = super()._result(timeline, node_s)
        jobs = []
        for record in base.jobs:
            cost = sum(usd_over(p.instance.gpu_usd_per_hour(self.config.spot),
                                self._gpu_s.get((record.name, m), 0.0))
                       for m, p in self.pools.items())
            intervals = tuple((a, b, t, n) for a, b, t, n in self._intervals[record.name])
            jobs.append(dataclasses.replace(record, cost_usd=cost, intervals=intervals))
        return dataclasses.replace(base, jobs=tuple(jobs))

    def gpu_hours_by_type(self) -> dict[str, float]:
        """Catalog instance type -> GPU-hours jobs held on it."""
        out = dict.fromkeys((p.instance_name for p in self.pools.values()), 0.0)
        for (_, model), gpu_s in self._gpu_s.items():
            out[self.pools[model].instance_name] += gpu_s / SECONDS_PER_HOUR
        return out

