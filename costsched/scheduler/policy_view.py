"""How the live scheduler describes its jobs and nodes to a policy.

* throughput: once a job has measured its steps, Pollux's model fitted to them
  (:class:`~costsched.scheduler.job_models.FixedBatchThroughput`); before that, a
  documented default: linear scaling with a per-GPU synchronisation penalty,
  ``step_time_s(k GPUs) = step_s * (1 + sync_penalty_per_gpu * (k - 1))`` at a fixed
  total batch, so the speedup over one GPU is ``k / (1 + p * (k - 1))``;
* efficiency: flat (every batch size makes the same progress per sample), the
  job's own ``training.global_batch_size`` being fixed whatever its size;
* size: once measured, under an elastic policy, at most ``EXPLORATION_FACTOR`` (8)
  times the GPUs of the most workers measured (as in simulation; Pollux's rule uses
  2); before the first measurement the whole min..max range (``model`` is None
  then, as it is for every job when ``use_measured_models`` is off).

* work left (:func:`remaining_work`), which cost-aware weighs a job by (nearest its end
  first): for a fixed-batch job with a fitted model, the total steps its run reported
  less its last step, also while it waits or restarts; for any other, once its running
  attempt has reported the seconds it needs to its last step (``eta_s``), that times its
  goodput on the workers it holds. Before that (and, for the latter, while it waits)
  None, and cost-aware weighs it by the service it has had.

A job with ``training.adaptive_batch`` is seen as Pollux sees it instead: the fitted
model at every per-GPU batch (:class:`~costsched.goodput.throughput.FittedThroughput`)
and the efficiency of its measured noise scale, so the policy picks its global batch
between ``global_batch_size`` and ``max_batch_size``. Until the job has measured its
gradient noise, every batch is given the same progress per step, so the smallest
(its own) wins. Other jobs' batch sizes are not applied (the driver logs it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from costsched.config.job import JobConfig
from costsched.cost.prices import JobRate, PriceCatalog
from costsched.goodput.online import explored_max_gpus
from costsched.goodput.throughput import DEFAULT_PRIOR, FittedThroughput
from costsched.policy.goodput import best_goodput
from costsched.policy.snapshot import ClusterSnapshot, EfficiencyModel, JobView, NodeView
from costsched.scheduler.interfaces import NodeRecord, ResourceBundle
from costsched.scheduler.job_models import FixedBatchThroughput, JobModel
from costsched.scheduler.state import JobRecord

NOTIONAL_STEP_S = 1.0
"""Step time on one GPU; only ratios between GPU counts matter to a policy."""


@dataclass(frozen=True)
class LinearScalingThroughput:
    """Step time at a fixed total batch: 1 GPU takes ``step_s``; each more adds
    ``sync_penalty_per_gpu`` of it for gradient synchronisation."""

    local_bsz: int
    """Notional per-GPU batch (the job's global batch; efficiency is flat)."""
    sync_penalty_per_gpu: float
    """Fraction of a one-GPU step each extra GPU adds."""
    step_s: float = NOTIONAL_STEP_S
    """Seconds per step on one GPU."""

    def local_bsz_choices(self) -> np.ndarray:
        return np.array([self.local_bsz])

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        gpus = max(sum(placement), 1)
        return self.step_s * (1.0 + self.sync_penalty_per_gpu * (gpus - 1))


def gpus_per_worker(config: JobConfig) -> int:
    return round(config.scaling.accelerators_per_worker)


def job_view(record: JobRecord, config: JobConfig, sync_penalty_per_gpu: float,
             rate: JobRate, *, elastic: bool, model: JobModel | None = None,
             restart_s: float | None = None, running_since_s: float | None = None) -> JobView:
    """The policy's view of a live job; GPUs = workers x accelerators per worker.

    Every policy sees the range the user declared, min..max workers, and the max as
    the size asked for: an elastic policy sizes the job within the range each round;
    a fixed-size one starts it at the largest whole number of workers that fits (so
    ``elastic`` changes the view only by the exploration cap below; unlike the
    simulator's trace jobs, whose ask is one size, see
    :func:`~costsched.policy.drive.gpu_range`). A job priced
    on-demand (``cost.spot: false``) is kept off spot nodes. ``running_since_s``: when
    the job's current run began (its last start, resume or resize) if it runs; it
    shields the job from preemption by its equals for the policy's ``min_run_s``.

    A measured job (``model``) under an elastic policy is offered at most
    ``EXPLORATION_FACTOR`` times the GPUs of the most workers it has measured, never
    below its minimum, as in simulation
    (:func:`~costsched.goodput.online.explored_max_gpus`): it grows in those steps until
    its fit has seen the sizes it is offered."""
    per_worker = gpus_per_worker(config)
    batch = config.training.global_batch_size
    max_gpus = record.max_workers * per_worker
    lo, hi = record.min_workers * per_worker, max_gpus
    if model is not None and elastic:
        hi = explored_max_gpus(lo, hi, model.most_replicas_tried * per_worker)
    if config.training.adaptive_batch:
        throughput, efficiency = adaptive_models(config, model, max_gpus)
    else:
        throughput = (LinearScalingThroughput(batch, sync_penalty_per_gpu) if model is None
                      else fixed_batch_throughput(model, config))
        # Pure noise (grad_sqr ~ 0): gain(B) ~ B / B0, efficiency ~ 1 at every batch.
        efficiency = EfficiencyModel(init_batch_size=batch, max_batch_size=batch * max_gpus,
                                     grad_sqr=1e-9, grad_var=1.0)
    view = JobView(
        name=record.job_id, arrival_time_s=record.submitted_at,
        attained_service_gpu_s=record.attained_gpu_s,
        min_gpus=lo, max_gpus=hi,
        requested_gpus=max_gpus, requested_batch_size=batch,
        throughput=throughput, efficiency=efficiency,
        priority=record.priority, budget_usd=record.budget_usd, spent_usd=record.spent_usd,
        usd_per_gpu_hour=rate.usd_per_accelerator_hour, restart_s=restart_s,
        on_demand=not config.cost.spot, gpus_per_worker=per_worker,
        running_since_s=running_since_s,
    )
    by_steps = model is not None and not config.training.adaptive_batch
    return dataclasses.replace(view, remaining_work=remaining_work(
        view, record, per_worker, by_steps=by_steps))


def remaining_work(view: JobView, record: JobRecord, per_worker: int, *,
                   by_steps: bool = False) -> float | None:
    """The work a job has left, in its goodput's units (steps at its initial batch).

    ``by_steps`` (a fixed-batch job with a fitted model, so that its goodput is real
    steps per second), once its run has reported its total steps: those less its last
    step, whether it runs, waits or restarts. Otherwise the seconds its run last
    reported to its last step (``eta_s``, at that attempt's step rate) times its goodput
    on the workers it holds. None when neither is known: a job that has not reported
    yet, or one judged by ``eta_s`` that holds no workers or whose new attempt has no
    steps yet."""
    if by_steps and record.total_steps is not None:
        return float(max(record.total_steps - record.last_step, 0))
    if record.eta_s is None or record.workers <= 0:
        return None
    per_node = max(record.placement.values(), default=record.workers) * per_worker
    goodput = best_goodput(view, record.workers * per_worker, per_node).goodput
    return max(record.eta_s, 0.0) * goodput if goodput > 0 else None


def adaptive_batch_choices(base: int, limit: int, max_gpus: int) -> list[int]:
    """Per-GPU batches that give global batches B0 x 2^j (and the limit) on 1..max_gpus
    GPUs: the candidates the policy scores for an adaptive job."""
    totals = {limit}
    total = base
    while total < limit:
        totals.add(total)
        total *= 2
    return sorted({max(1, b // k) for b in totals for k in range(1, max(max_gpus, 1) + 1)})


def adaptive_models(config: JobConfig, model: JobModel | None,
                    max_gpus: int) -> tuple[FittedThroughput, EfficiencyModel]:
    """An adaptive job's throughput at any batch (fitted, or the prior before any step)
    and its efficiency from the measured noise scale (flat before it is measured)."""
    training = config.training
    base, limit = training.global_batch_size, training.batch_size_limit
    throughput = FittedThroughput(model.params if model is not None else DEFAULT_PRIOR,
                                  adaptive_batch_choices(base, limit, max_gpus),
                                  training.micro_batch_size or limit)
    measured = model is not None and model.grad_sqr and model.grad_var is not None
    # EfficiencyModel's grad_var is that of a B0-example gradient: tr(Sigma) / B0.
    sqr, var = (model.grad_sqr, model.grad_var / base) if measured else (1.0, 0.0)
    return throughput, EfficiencyModel(init_batch_size=base, max_batch_size=limit,
                                       grad_sqr=sqr, grad_var=var)


def fixed_batch_throughput(model: JobModel, config: JobConfig) -> FixedBatchThroughput:
    """The job's fitted model at its fixed global batch (micro-batches of at most
    ``training.micro_batch_size`` when set)."""
    training = config.training
    return FixedBatchThroughput(model.params, training.global_batch_size,
                                training.micro_batch_size or training.global_batch_size)


def node_views(nodes: Iterable[NodeRecord]) -> tuple[NodeView, ...]:
    """Alive nodes with accelerator slots and no reclaim notice, as the policy sees them.
    Slots reserved on a node (total - free) include those of the scheduler's own running
    jobs; the policy takes those back out and plans only around the rest (work it does
    not control)."""
    return tuple(
        NodeView(node_id=n.node_id, gpu_model=n.gpu_model, num_gpus=n.total_slots,
                 usd_per_hour=n.usd_per_hour, spot=n.spot,
                 reserved_gpus=max(n.total_slots - n.free_slots, 0))
        for n in nodes if n.alive and n.total_slots > 0 and not n.reclaim_notice
    )


def noticed(nodes: Iterable[NodeRecord]) -> set[str]:
    """Ids of the alive nodes with a reclaim notice."""
    return {n.node_id for n in nodes if n.alive and n.reclaim_notice}


def build_snapshot(*, now: float, round_index: int, views: Sequence[JobView],
                   nodes: tuple[NodeView, ...], placements: Mapping[str, Mapping[str, int]],
                   round_s: float, restart_s: float) -> ClusterSnapshot:
    """A fixed-cluster snapshot: the controller asks the autoscaler itself."""
    alive = {n.node_id for n in nodes}
    kept = {job: dict(p) for job, p in placements.items() if p and set(p) <= alive}
    return ClusterSnapshot(time_s=now, round_index=round_index, jobs=tuple(views), nodes=nodes,
                           placements=kept, round_s=round_s, restart_s=restart_s)


def cheapest_instance(catalog: PriceCatalog, *, gpus_per_worker: int, spot: bool,
                      allowed: Sequence[str]) -> str | None:
    """Catalog type with the lowest price per accelerator that holds one whole worker
    (ties: fewer accelerators per node, then name); None if none does."""
    names = allowed or sorted(catalog.instance_types)
    fitting = [(catalog.instance(n).gpu_usd_per_hour(spot), catalog.instance(n).num_gpus_per_node,
                n) for n in names if catalog.instance(n).num_gpus_per_node >= gpus_per_worker]
    return min(fitting)[2] if fitting else None


def worker_bundles(config: JobConfig, num_workers: int, *, instance_type: str,
                   accelerator_resource: str) -> list[ResourceBundle]:
    """One bundle per worker of the job's resources."""
    resources = {"CPU": config.scaling.cpus_per_worker,
                 accelerator_resource: float(gpus_per_worker(config))}
    return [ResourceBundle(resources=resources, instance_type=instance_type,
                           spot=config.cost.spot) for _ in range(num_workers)]


def nodes_needed(catalog: PriceCatalog, instance_type: str, num_gpus: int) -> int:
    return math.ceil(num_gpus / catalog.instance(instance_type).num_gpus_per_node)


def job_bundles(config: JobConfig, num_workers: int, catalog: PriceCatalog, *,
                allowed: Sequence[str], accelerator_resource: str
                ) -> tuple[list[ResourceBundle], int]:
    """Bundles for ``num_workers`` of the job on its cheapest fitting type, and the
    number of such nodes they fill; ([], 0) when no allowed type fits a worker."""
    per_worker = gpus_per_worker(config)
    instance = cheapest_instance(catalog, gpus_per_worker=per_worker, spot=config.cost.spot,
                                 allowed=allowed)
    if instance is None:
        return [], 0
    bundles = worker_bundles(config, num_workers, instance_type=instance,
                             accelerator_resource=accelerator_resource)
    return bundles, nodes_needed(catalog, instance, num_workers * per_worker)
