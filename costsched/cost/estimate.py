"""A job's plan and cost estimate, computed without Ray (for ``--dry-run``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from costsched.config.job import JobConfig
from costsched.cost.prices import SECONDS_PER_HOUR, PriceCatalog, rate_of_job
from costsched.training.data import Splits
from costsched.training.model_factory import JobModelFactory
from costsched.training.optim import build_optimizer
from costsched.training.schedule import BatchPlan


@dataclass(frozen=True, kw_only=True)
class CostEstimate:
    num_workers: int
    """Workers the estimate assumes (the job's maximum)."""
    resources_per_worker: dict[str, float]
    num_train_rows: int
    num_val_rows: int
    num_test_rows: int
    num_params: int
    steps_per_epoch: int
    total_steps: int
    usd_per_hour: float
    """What the job's workers cost per hour together."""
    step_s: float
    """Measured seconds per optimiser step here, on one process, at the per-worker batch
    (0: not measured)."""
    estimated_hours: float
    estimated_usd: float

    def lines(self, job: JobConfig) -> list[str]:
        return [
            f"job            {job.name}  (config {job.config_hash()})",
            f"workers        {job.scaling.min_workers}..{job.scaling.max_workers}, "
            f"resources per worker {self.resources_per_worker}, use_gpu={job.scaling.use_gpu}",
            f"data           {job.dataset.name}: train {self.num_train_rows}, "
            f"val {self.num_val_rows}, test {self.num_test_rows} rows",
            f"model          {job.model.kind} widths {list(job.model.widths)}, "
            f"{self.num_params:,} parameters, precision {job.training.precision}",
            f"schedule       {job.training.num_epochs} epochs x {self.steps_per_epoch} steps, "
            f"global batch {job.training.global_batch_size}, checkpoint every "
            f"{job.checkpoint.interval_steps} steps, max_failures {job.checkpoint.max_failures}",
            *self._price_lines(job),
        ]

    def _price_lines(self, job: JobConfig) -> list[str]:
        lines = [
            f"price          {job.cost.instance_type} ({'spot' if job.cost.spot else 'on-demand'})"
            f": ${self.usd_per_hour:.4f}/h for {self.num_workers} worker(s)",
        ]
        if self.step_s > 0:
            lines.append(
                f"estimate       {self.estimated_hours * 3600:.0f} s, ${self.estimated_usd:.5f} "
                f"(budget ${job.cost.budget_usd:g}; step time {self.step_s * 1e3:.1f} ms "
                "measured in this process, excluding start-up; a rough guide only)")
        return lines


def entrypoint_plan_lines(job: JobConfig, catalog: PriceCatalog) -> list[str]:
    """The dry run of a job with its own entrypoint: what it holds and what it costs
    per hour (its step time is measured once it runs)."""
    rate = rate_of_job(job, catalog)
    usd_per_hour = rate.usd_per_hour(job.scaling.max_workers)
    return [
        f"job            {job.name}  (config {job.config_hash()})",
        f"entrypoint     {job.entrypoint} with {len(job.entrypoint_config)} config key(s)",
        f"workers        {job.scaling.min_workers}..{job.scaling.max_workers} "
        f"({job.scaling.strategy}), resources per worker "
        f"{job.scaling.resources_per_worker()}, use_gpu={job.scaling.use_gpu}",
        f"price          {job.cost.instance_type} ({'spot' if job.cost.spot else 'on-demand'})"
        f": ${usd_per_hour:.4f}/h for {job.scaling.max_workers} worker(s)",
        f"budget         ${job.cost.budget_usd:g} buys "
        f"{rate.hours_for(job.cost.budget_usd, job.scaling.max_workers):.2f} h at that size",
    ]


def measure_step_seconds(job: JobConfig, model: torch.nn.Module, splits: Splits,
                         batch_size: int, steps: int = 20) -> float:
    """Median wall time of a forward+backward+step at ``batch_size``, on this process's CPU,
    with as many torch threads as a worker has CPUs (as Ray sets them on a worker: with
    every core's thread instead, a loaded machine made steps 30x slower)."""
    optimizer = build_optimizer(job.optimizer, model.parameters())
    x = torch.as_tensor(splits.x_train[:batch_size])
    y = torch.as_tensor(splits.y_train[:batch_size])
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    try:
        for _ in range(steps + 3):  # the first steps warm up kernels and allocator
            started = time.perf_counter()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return sorted(times[3:])[len(times[3:]) // 2]


def make_plan(job: JobConfig, splits: Splits, catalog: PriceCatalog, *,
              measure: bool = True) -> CostEstimate:
    """The job's plan; with ``measure``, a rough estimate from steps timed here."""
    workers = job.scaling.max_workers
    batch = BatchPlan(global_batch_size=job.training.global_batch_size, world_size=workers,
                      rank=0, micro_batch_size=job.training.micro_batch_size)
    steps_per_epoch = batch.steps_per_epoch(len(splits.x_train))
    total_steps = steps_per_epoch * job.training.num_epochs
    torch.manual_seed(0)
    model = JobModelFactory(job=job, input_shape=splits.input_shape,
                            num_classes=splits.num_classes)()
    num_params = sum(p.numel() for p in model.parameters())
    step_s = measure_step_seconds(job, model, splits, batch.max_local_batch_size) if measure \
        else 0.0
    hours = total_steps * step_s / 3600.0
    rate = rate_of_job(job, catalog)
    return CostEstimate(
        num_workers=workers, resources_per_worker=job.scaling.resources_per_worker(),
        num_train_rows=len(splits.x_train), num_val_rows=len(splits.x_val),
        num_test_rows=len(splits.x_test),
        num_params=num_params,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps,
        usd_per_hour=rate.usd_per_hour(workers),
        step_s=step_s, estimated_hours=hours,
        estimated_usd=rate.usd(num_workers=workers, seconds=hours * SECONDS_PER_HOUR),
    )
