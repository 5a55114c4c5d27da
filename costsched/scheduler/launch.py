"""The launch forecast of a scheduled run.

A job run by the scheduler runs at the size, batch and price the scheduler chose, not
the ones its config declares, so a dry run's forecast of the config cannot be its run's
own. ``costsched submit`` sends the newest dry-run forecast of the config (its measured
profile, and the learning curve of the config's last finished run:
:func:`~costsched.cost.plans.submitted_plan`) with the job; the scheduler keeps it in
its ledger under the submitted config's hash. When the job's run first starts, its
driver rescales that profile to the run (:func:`rescaled_profile`) and stores the
forecast it gives (:func:`launch_forecast`) as the run's launch forecast: the one
``costsched report`` sets beside what the run did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from costsched.config.job import JobConfig
from costsched.cost.forecast import Forecast, RunProfile, forecast_from_profile
from costsched.cost.plans import PRIOR_CURVE_KEY, profile_from_detail
from costsched.cost.prices import PriceCatalog, rate_of_job
from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    ThroughputParams,
    ThroughputPoint,
    fit_throughput,
)
from costsched.scheduler.job_models import (
    STEP_FIELDS,
    FixedBatchThroughput,
    Measurement,
    throughput_point,
)
from costsched.training.schedule import BatchPlan

__all__ = ["launch_forecast", "measured_point", "profile_params", "profiled_size",
           "rescaled_profile"]


def measured_point(profile: RunProfile) -> ThroughputPoint | None:
    """The step the profile measured, as the scheduler's learner takes a measured step
    (:func:`~costsched.scheduler.job_models.throughput_point`); None if it measured none."""
    try:
        step = Measurement(**{k: profile.step[k] for k in STEP_FIELDS})
    except (KeyError, TypeError):
        return None
    return throughput_point(step)


def profiled_size(profile: RunProfile) -> tuple[int, int]:
    """Workers and nodes the profile's steps ran on: as its step measurement says (an
    elastic job's profile may run on fewer than its most), else its ``num_workers`` on
    one node."""
    point = measured_point(profile)
    return (profile.num_workers, 1) if point is None else (point.num_replicas,
                                                           point.num_nodes)


def profile_params(profile: RunProfile,
                   prior: ThroughputParams = DEFAULT_PRIOR) -> ThroughputParams:
    """The throughput model a profile gives: ``prior`` fitted to its measured step
    (:func:`fit_throughput`, the scheduler's own fit: the measured compute sets the
    compute constants' scale, the measured sync the all-reduce's), the prior scaled to
    the measured compute when one worker measured no sync, or ``prior`` itself when it
    measured nothing."""
    point = measured_point(profile)
    if point is None:
        return prior
    if point.num_replicas == 1:
        # No all-reduce measured: the fit would keep the prior's at full size beside the
        # job's own compute. The whole prior at the job's compute scale keeps its ratio.
        scale = point.compute_time_s / (prior.alpha_c + prior.beta_c * point.local_bsz)
        return dataclasses.replace(prior, **{
            name: getattr(prior, name) * scale for name in
            ("alpha_c", "beta_c", "alpha_r", "beta_r", "alpha_n", "beta_n")})
    return fit_throughput([point], prior)


def rescaled_profile(profile: RunProfile, *, num_workers: int, num_nodes: int,
                     profiled_batch: int, batch: int, max_local_bsz: int,
                     prior: ThroughputParams = DEFAULT_PRIOR) -> RunProfile:
    """``profile`` as if it had run on ``num_workers`` workers over ``num_nodes`` nodes
    at global batch ``batch``: its step time scaled by the model's ratio,

        step_s' = step_s x T(num_nodes, num_workers, batch) / T(nodes, W, profiled_batch)

    where ``T`` is :meth:`FixedBatchThroughput.real_step_time_s` with the profile's
    model (:func:`profile_params`: ``prior``, the model the scheduler sizes unmeasured
    jobs with, fitted to the profile's measured step) and W the workers its steps ran
    on (:func:`profiled_size`).
    Start-up, epoch overhead and tail stay as measured. Unchanged at the profiled
    workers, nodes and batch."""
    params = profile_params(profile, prior)
    workers, nodes = profiled_size(profile)
    if (num_workers, num_nodes, batch) == (workers, nodes, profiled_batch):
        return profile
    before = FixedBatchThroughput(params, profiled_batch, max_local_bsz).real_step_time_s(
        min(nodes, workers), workers)
    after = FixedBatchThroughput(params, batch, max_local_bsz).real_step_time_s(
        min(num_nodes, num_workers), num_workers)
    return dataclasses.replace(profile, num_workers=num_workers,
                               step_s=profile.step_s * after / before)


def launch_forecast(job: JobConfig, plan: Mapping[str, Any], *, num_train_rows: int,
                    num_nodes: int, profiled_batch: int, catalog: PriceCatalog,
                    batch: int | None = None,
                    prior: ThroughputParams = DEFAULT_PRIOR) -> tuple[Forecast, RunProfile]:
    """The forecast of a run of ``job`` as launched (its workers the run's, its price
    the nodes' it is billed at) from a submitted ``plan``
    (:func:`~costsched.cost.plans.submitted_plan`) of a
    profile measured at ``profiled_batch``, with the rescaled profile; ``batch``: the
    global batch the scheduler chose (None: the job's)."""
    training = job.training
    batch = batch or training.global_batch_size
    workers = job.scaling.max_workers
    max_local = training.micro_batch_size or max(batch, profiled_batch)
    profile = rescaled_profile(profile_from_detail(plan["detail"]), num_workers=workers,
                               num_nodes=num_nodes, profiled_batch=profiled_batch,
                               batch=batch, max_local_bsz=max_local, prior=prior)
    steps = BatchPlan(global_batch_size=batch, world_size=workers, rank=0,
                      micro_batch_size=training.micro_batch_size
                      ).steps_per_epoch(num_train_rows)
    forecast = forecast_from_profile(
        profile, rate=rate_of_job(job, catalog), num_epochs=training.num_epochs,
        steps_per_epoch=steps,
        target=training.target_value if training.target_metric else None,
        prior_curve=plan["detail"].get(PRIOR_CURVE_KEY) or [])
    return forecast, profile
