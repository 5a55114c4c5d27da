"""Trace-driven cluster simulator: replay a workload under a policy, round by round.

Every ``round_s`` (60 s) the policy gets a snapshot and returns a decision; the
simulator checks it, applies it and advances every job to the next round:

* a job whose placement changed makes no progress for ``restart_s`` (30 s);
* a step takes the measured time of its placement and per-GPU batch size
  (interpolated where not measured, see ``profiles.AppProfile.step_time_s``);
  a batch above the per-GPU cap runs as gradient accumulation:
  step = step(atomic) + (accum - 1) * (step(atomic) - sync(atomic));
* a step at total batch B advances progress by gain(B) at the current epoch
  (``profiles.AppProfile.gain``); the job completes when its progress reaches
  the progress of its app's last epoch on the initial-batch curve.

Nodes are charged from the catalog for as long as they exist, from time 0 to
the last completion; a job is charged its GPU share for the time it holds GPUs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from costsched.cost.prices import SECONDS_PER_HOUR, InstanceType, usd_over
from costsched.errors import ConfigError
from costsched.goodput.online import (
    EXPLORATION_FACTOR,
    OnlineThroughput,
    SharedMeasurements,
    first_gpus,
)
from costsched.goodput.throughput import FittedThroughput, ThroughputPoint
from costsched.policy.autoscale_hysteresis import NodeCountHysteresis, NodeCountSmoother
from costsched.policy.drive import drive, gpu_range
from costsched.policy.goodput import best_goodput
from costsched.policy.registry import Policy
from costsched.policy.snapshot import (
    Autoscaling,
    ClusterSnapshot,
    EfficiencyModel,
    JobView,
    NodeView,
    placement_shape,
)
from costsched.sim.budgets import out_of_budget
from costsched.sim.profiles import AppProfile
from costsched.sim.results import SimJobResult, SimResult
from costsched.sim.workload import JobSpec


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """The simulated cluster and its rules."""

    instance: InstanceType
    """Node type: GPUs per node and price."""
    instance_name: str = "g4dn.12xlarge"
    """Catalog name of ``instance``."""
    num_nodes: int = 16
    """Nodes of a fixed cluster (with autoscaling: nodes at the start, clamped)."""
    spot: bool = False
    """Price nodes as spot capacity."""
    autoscale: tuple[int, int] | None = None
    """(min, max) nodes when the policy may resize the cluster; ``None`` = fixed."""
    autoscale_hysteresis: NodeCountHysteresis | None = None
    """With ``autoscale``: resize to a moving average of the policy's wanted node count
    (:mod:`~costsched.policy.autoscale_hysteresis`); None: to each round's count."""
    elastic: bool = False
    """Offer jobs their elastic range (1 .. max useful GPUs) instead of the requested size."""
    round_s: float = 60.0  # seconds between scheduling decisions
    restart_s: float = 30.0  # seconds of no progress after each change of a placement
    max_time_s: float = 90 * 24 * 3600.0
    """Give up (error) if jobs are still running after this much simulated time."""
    first_measure_s: float = 10.0
    """Seconds of steps before a learning job's first measurement (step time, gradient
    noise); an elastic job then re-chooses its batch on its GPUs (as AdaptDL's jobs do)."""
    oracle: bool = False
    """Show the policy each job's measured profile at every placement. False (the
    honest default): the policy sees only what a live job would have measured, Pollux's
    model fitted to the steps simulated so far (:mod:`costsched.goodput.online`), the
    noise scale at the batch it last measured, and sizes up to ``explore_factor``
    times the most it has tried (Pollux's rule is 2; before any step, the size its user
    asked for, at most one node: :func:`~costsched.goodput.online.first_gpus`)."""
    explore_factor: int = EXPLORATION_FACTOR
    share_measurements: bool = False
    """Without ``oracle``: a job starts from the steps that earlier jobs of its app (on its
    GPU type) measured, not from the prior alone (:class:`SharedMeasurements`)."""
    tell_remaining_work: bool = True
    """Each job tells the policy the work it has left (its app's epochs less the progress
    made: ``JobView.remaining_work``) from its arrival on, queued or running. A live job
    tells it only once its run has reported it (an adaptive-batch one only while it
    runs), so this is the best case for the live scheduler. False: the policy knows only
    the service each job has had."""
    remaining_work_while_running: bool = False
    """With ``tell_remaining_work``, a job tells it only while it holds GPUs, has been
    measured and is not restoring from a placement change: what a live adaptive-batch
    job's run reports (its time to go, from its running attempt's steps)."""

    def __post_init__(self) -> None:
        if (self.num_nodes < 0 or self.round_s <= 0 or self.restart_s < 0
                or self.first_measure_s < 0 or self.explore_factor < 1):
            raise ConfigError("need num_nodes >= 0, round_s > 0, restart_s >= 0, "
                              "first_measure_s >= 0 and explore_factor >= 1")
        if self.autoscale is None and self.num_nodes < 1:
            raise ConfigError("a fixed cluster needs at least one node (--nodes)")
        if self.autoscale is None and self.autoscale_hysteresis is not None:
            raise ConfigError("autoscaling hysteresis needs autoscaling (--autoscale MIN:MAX)")


@dataclass(kw_only=True)
class SimJob:
    """Mutable run state of one job (the simulators' own; not for policies)."""

    spec: JobSpec
    app: AppProfile
    progress: float = 0.0
    gpu_s: float = 0.0
    placement: dict[str, int] = field(default_factory=dict)
    batch_size: int = 0
    restart_left_s: float = 0.0
    num_placements: int = 0
    run_started_s: float | None = None  # its last placement change (``running_since_s``)
    finish_time_s: float | None = None
    learned: OnlineThroughput | None = None
    fitted: FittedThroughput | None = None
    """What the policy sees of ``learned``: its fit (the prior before any step)."""
    measured_batch_size: int = 0
    outcome: str = "COMPLETED"


class ProfileThroughput:
    """The policy's throughput model backed by the measured profile (the ``--oracle`` view).

    A per-GPU batch above the app's cap accumulates micro-batches exactly as the
    simulator runs it (:meth:`AppProfile.accumulated_step_time_s`)."""

    def __init__(self, app: AppProfile) -> None:
        self._app, self.max_atomic_bsz = app, app.max_local_bsz
        self.cache_key, self.step_tables = ("profile", id(app)), app.step_tables  # on the app

    def local_bsz_choices(self) -> np.ndarray:
        return self._app.local_bsz_choices

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        return self._app.accumulated_step_time_s(placement, local_bsz)


def max_useful_gpus(app: AppProfile) -> int:
    """Most GPUs an elastic job can use: its max batch at the smallest per-GPU batch."""
    return max(1, app.max_batch_size // app.min_local_bsz)


class Simulator:
    """Replays one workload under one policy."""

    def __init__(self, *, config: SimConfig, profiles: dict[str, AppProfile],
                 workload: Sequence[JobSpec], policy: Policy) -> None:
        unknown = sorted({s.application for s in workload} - set(profiles))
        if unknown:
            raise ConfigError(f"workload uses apps without profiles: {unknown}")
        self.config = config
        self.policy = policy
        self.jobs = [SimJob(spec=s, app=profiles[s.application]) for s in workload]
        if not config.oracle:
            fits: dict = {}  # a memo: jobs of one app often measure the very same steps
            for job in self.jobs:
                job.learned = OnlineThroughput(fit_cache=fits)
                job.fitted = self._fitted(job)
        self._throughput = {name: ProfileThroughput(app) for name, app in profiles.items()}
        self._shared = (SharedMeasurements()
                        if config.share_measurements and not config.oracle else None)
        self.node_usd_per_hour = config.instance.node_usd_per_hour(config.spot)
        self.gpu_usd_per_hour = config.instance.gpu_usd_per_hour(config.spot)
        num = config.num_nodes
        if config.autoscale is not None:
            num = min(max(num, config.autoscale[0]), config.autoscale[1])
        most_nodes = config.autoscale[1] if config.autoscale is not None else num
        capacity = most_nodes * config.instance.num_gpus_per_node
        too_big = [s.name for s in workload if s.num_replicas > capacity]
        if too_big and not config.elastic:
            raise ConfigError(f"job(s) {too_big[:3]} ask for more than the cluster's {capacity} "
                              "GPUs and would never run; add nodes or use an elastic policy")
        self.nodes = [self._node(f"node-{i}") for i in range(num)]
        self._smoother = None
        if config.autoscale_hysteresis is not None:
            if not hasattr(policy, "nodes_wanted"):
                raise ConfigError(f"policy {policy.name} does not size the cluster; "
                                  "autoscaling hysteresis needs one that does (cost-aware)")
            self._smoother = NodeCountSmoother(config.autoscale_hysteresis,
                                               min_nodes=config.autoscale[0],
                                               max_nodes=config.autoscale[1])

    def _node(self, node_id: str) -> NodeView:
        inst = self.config.instance
        return NodeView(node_id=node_id, gpu_model=inst.gpu_model, num_gpus=inst.num_gpus_per_node,
                        usd_per_hour=self.node_usd_per_hour, spot=self.config.spot)

    def run(self, on_round: Callable[[float, int, int], None] | None = None) -> SimResult:
        """Simulate to the last completion; ``on_round(time_s, done, total)`` reports progress."""
        # The fits are many small problems: BLAS threads only contend on a shared machine.
        with threadpool_limits(limits=1):
            return self._run(on_round)

    def _run(self, on_round: Callable[[float, int, int], None] | None) -> SimResult:
        cfg = self.config
        pending = sorted(self.jobs, key=lambda j: (j.spec.submit_time_s, j.spec.name))
        active: list[SimJob] = []
        timeline: list[tuple[float, int, int, float]] = []
        node_s = 0.0
        time_s, round_index, done = 0.0, 0, 0
        while pending or active:
            if time_s > cfg.max_time_s:
                raise ConfigError(f"jobs still running after {cfg.max_time_s:.0f} s; "
                                  "is a job larger than the cluster?")
            while pending and pending[0].spec.submit_time_s <= time_s:
                active.append(self._arrived(pending.pop(0)))
            self._schedule(active, time_s, round_index)
            for job in active:
                if not job.placement and math.isfinite(job.spec.budget_usd) and out_of_budget(
                        self._view(job, time_s), self.nodes, cfg.round_s):
                    job.finish_time_s, job.outcome = time_s, "BUDGET_EXHAUSTED"
                self._advance(job, time_s)
            finished = [j for j in active if j.finish_time_s is not None]
            done += len(finished)
            active = [j for j in active if j.finish_time_s is None]
            end_s = time_s + cfg.round_s
            if not pending and not active:
                end_s = max((j.finish_time_s for j in finished), default=time_s)
            node_s += len(self.nodes) * (end_s - time_s)
            allocated = sum(sum(j.placement.values()) for j in active + finished)
            timeline.append((time_s, allocated, len(self.nodes), self._cluster_usd(node_s)))
            if on_round is not None:
                on_round(time_s, done, len(self.jobs))
            time_s, round_index = time_s + cfg.round_s, round_index + 1
        return self._result(timeline, node_s)

    def _view(self, job: SimJob, time_s: float) -> JobView:
        app, spec = job.app, job.spec
        lo, hi = gpu_range(elastic=self.config.elastic,
                           elastic_range=(1, max(max_useful_gpus(app), spec.num_replicas)),
                           requested_gpus=spec.num_replicas)
        throughput, (sqr, var) = self._models(job)
        if job.learned is not None and self.config.elastic:
            hi = job.learned.max_gpus(lo, hi, factor=self.config.explore_factor,
                                      first=first_gpus(spec.num_replicas))
        return JobView(
            name=spec.name, arrival_time_s=spec.submit_time_s,
            attained_service_gpu_s=job.gpu_s, min_gpus=lo, max_gpus=hi,
            requested_gpus=spec.num_replicas, requested_batch_size=spec.batch_size,
            throughput=throughput,
            efficiency=EfficiencyModel(init_batch_size=app.init_batch_size,
                                       max_batch_size=app.max_batch_size,
                                       grad_sqr=max(sqr, 1e-12), grad_var=var),
            priority=spec.priority, budget_usd=spec.budget_usd,
            spent_usd=usd_over(self.gpu_usd_per_hour, job.gpu_s),
            usd_per_gpu_hour=self.gpu_usd_per_hour,
            num_restarts=max(job.num_placements - 1, 0),
            running_since_s=job.run_started_s if job.placement else None,  # as live: waiting
            remaining_work=(max(app.target_progress - job.progress, 0.0)
                            if self._tells_work_left(job) else None),
        )

    def _tells_work_left(self, job: SimJob) -> bool:
        cfg = self.config
        return cfg.tell_remaining_work and (not cfg.remaining_work_while_running or bool(
            job.placement and job.restart_left_s <= 0
            and (job.learned is None or job.measured_batch_size)))  # oracle: no measuring

    def _models(self, job: SimJob) -> tuple[object, tuple[float, float]]:
        """(throughput model, (grad_sqr, grad_var)) the policy sees for ``job``: the
        profile and the statistics at its batch now (oracle), or the fit to its measured
        steps and the statistics at the batch it last ran (flat before its first step)."""
        app = job.app
        epoch = math.floor(app.epoch_at(job.progress))
        if job.learned is None:
            batch = job.batch_size or job.spec.batch_size
            return self._throughput[app.name], app.grad_stats(batch, epoch)
        if not job.measured_batch_size:
            return job.fitted, (1.0, 0.0)
        return job.fitted, app.grad_stats(job.measured_batch_size, epoch)

    @staticmethod
    def _fitted(job: SimJob) -> FittedThroughput:
        """The policy's model of a learning job: its learner's fit at the app's batches."""
        return FittedThroughput(job.learned.params, job.app.local_bsz_choices.tolist(),
                                job.app.max_local_bsz)

    def snapshot(self, active: list[SimJob], time_s: float, round_index: int) -> ClusterSnapshot:
        """What the policy is shown this round: ``active`` jobs' and the nodes' views."""
        cfg = self.config
        scaling = None
        if cfg.autoscale is not None:
            scaling = Autoscaling(min_nodes=cfg.autoscale[0], max_nodes=cfg.autoscale[1],
                                  template=self._node("auto"))
        return ClusterSnapshot(
            time_s=time_s, round_index=round_index,
            jobs=tuple(self._view(j, time_s) for j in active), nodes=tuple(self.nodes),
            placements={j.spec.name: dict(j.placement) for j in active if j.placement},
            autoscaling=scaling, round_s=cfg.round_s, restart_s=cfg.restart_s,
        )

    def _schedule(self, active: list[SimJob], time_s: float, round_index: int) -> None:
        snapshot = self.snapshot(active, time_s, round_index)
        if self._smoother is not None:
            wanted = self.policy.nodes_wanted(snapshot)
            target = self._smoother.update(wanted=wanted, current=len(self.nodes),
                                           elapsed_s=self.config.round_s)
            snapshot = dataclasses.replace(snapshot, autoscaling=dataclasses.replace(
                snapshot.autoscaling, target_nodes=target))
        decision = drive(self.policy, snapshot, elastic=self.config.elastic).decision
        removed = set(decision.nodes_to_remove)
        self.nodes = [n for n in self.nodes if n.node_id not in removed]
        self.nodes += list(decision.nodes_to_add)
        for job in active:
            new = {n: c for n, c in decision.placements.get(job.spec.name, {}).items() if c > 0}
            if new and new != job.placement:
                job.restart_left_s = self.config.restart_s
                job.num_placements, job.run_started_s = job.num_placements + 1, time_s
            job.placement = new
            job.batch_size = decision.batch_sizes.get(job.spec.name, job.batch_size) if new else 0
            if new and job.learned is not None and not job.measured_batch_size:
                job.batch_size = self._unmeasured_batch_size(job)

    def _advance(self, job: SimJob, time_s: float) -> None:
        """Run ``job`` on its placement for one round (or until it completes). A learning
        elastic job that has never been measured takes its first measurement after
        ``first_measure_s`` of steps and re-chooses its batch on the GPUs it holds."""
        replicas = sum(job.placement.values())
        if replicas == 0:
            return
        round_s = self.config.round_s
        pause = min(job.restart_left_s, round_s)
        job.restart_left_s -= pause
        ran_s = pause
        if (job.learned is not None and self.config.elastic and not job.measured_batch_size
                and pause + self.config.first_measure_s < round_s):
            ran_s = self._train(job, time_s, pause, pause + self.config.first_measure_s)
            if job.finish_time_s is None:
                self._measure(job)
                job.batch_size = self._first_batch_size(job, time_s)
        held_s = self._train(job, time_s, ran_s, round_s)
        job.gpu_s += replicas * held_s
        if job.learned is not None and held_s > pause:
            self._measure(job)

    def _train(self, job: SimJob, time_s: float, start_s: float, end_s: float) -> float:
        """Train from ``start_s`` to ``end_s`` into the round; returns when it stopped."""
        app = job.app
        left = end_s - start_s
        step_s = self._step_time_s(job)
        target = app.target_progress
        prog = app.curve_column(app.init_batch_size, "progress")
        while left > 0:
            epoch = math.floor(app.epoch_at(job.progress))
            progress_per_s = app.gain(job.batch_size, epoch) / step_s
            boundary = min(float(prog[epoch]) if epoch < len(prog) else target, target)
            need = max(boundary - job.progress, 0.0) / progress_per_s
            if need > left:
                job.progress += progress_per_s * left
                left = 0.0
            else:
                job.progress = boundary
                left -= need
                if job.progress >= target:
                    job.finish_time_s = time_s + end_s - left
                    break
        return end_s - left

    def _measure(self, job: SimJob) -> None:
        """Record ``job``'s step on its placement and the batch its noise was measured at."""
        point = self._measured_point(job)
        if job.learned.record(point):
            job.fitted = self._fitted(job)
        job.measured_batch_size = job.batch_size
        if self._shared is not None:  # what it measured itself, not what it adopted
            self._shared.add(self._share_key(job), [point])

    def _arrived(self, job: SimJob) -> SimJob:
        """``job``, just submitted: with shared measurements, it starts from its app's."""
        if self._shared is not None and job.learned.adopt(
                self._shared.points(self._share_key(job))):
            job.fitted = self._fitted(job)
        return job

    def _share_key(self, job: SimJob) -> object:
        """The jobs whose measurements ``job`` may start from: those of its app."""
        return job.spec.application

    @staticmethod
    def _unmeasured_batch_size(job: SimJob) -> int:
        """The batch a learning job runs before its first measurement: the one its user
        asked for (within its app's range), as a live job does; with no noise measured
        yet, the policy's flat efficiency would pick the app's smallest batch."""
        app = job.app
        return min(max(job.spec.batch_size, app.init_batch_size), app.max_batch_size)

    def _first_batch_size(self, job: SimJob, time_s: float) -> int:
        """The best batch on the GPUs ``job`` holds, by the model it just measured."""
        per_node = max(n.num_gpus for n in self.nodes if n.node_id in job.placement)
        view = self._view(job, time_s)
        count = sum(job.placement.values())
        return best_goodput(view, count, per_node).batch_size or job.batch_size

    def _measured_point(self, job: SimJob) -> ThroughputPoint:
        """The mean step ``job`` measured on its placement this round, as a live job
        reports it (micro-batch, accumulation, step and sync time)."""
        shape = placement_shape(job.placement)
        replicas = sum(shape)
        local = job.batch_size / replicas
        accum, step, sync = job.app.accumulated_step(shape, local)
        return ThroughputPoint(num_nodes=len(shape), num_replicas=replicas,
                               local_bsz=local / accum, accum_steps=accum,
                               step_time_s=step, sync_time_s=sync, placement=shape)

    def _step_time_s(self, job: SimJob) -> float:
        replicas = sum(job.placement.values())
        return job.app.accumulated_step_time_s(placement_shape(job.placement),
                                               job.batch_size / replicas)

    def _result(self, timeline: list, node_s: float) -> SimResult:
        records = tuple(
            SimJobResult(name=j.spec.name, application=j.spec.application,
                      submit_s=j.spec.submit_time_s, finish_s=float(j.finish_time_s),
                      gpu_hours=j.gpu_s / SECONDS_PER_HOUR,
                      cost_usd=usd_over(self.gpu_usd_per_hour, j.gpu_s),
                      restarts=max(j.num_placements - 1, 0), outcome=j.outcome)
            for j in self.jobs
        )
        node_hours = node_s / SECONDS_PER_HOUR
        return SimResult(jobs=records, timeline=tuple(timeline), node_hours=node_hours,
                         cost_usd=self._cluster_usd(node_s))

    def _cluster_usd(self, node_s: float) -> float:
        """Dollars for ``node_s`` node-seconds of the cluster's nodes."""
        return usd_over(self.node_usd_per_hour, node_s)
