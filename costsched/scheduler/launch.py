"""The launch forecast of a scheduled run.

A job run by the scheduler runs at the size, batch and price the scheduler chose, not
the ones its config declares, so a dry run's forecast of the config cannot be its run's
own. ``costsched submit`` sends the newest dry-run forecast of the config (its measured
profile, and the learning curve of the config's last finished run) with the job; the
scheduler keeps it in its ledger under the submitted config's hash. When the job's run
first starts, its driver rescales that profile to the run (:func:`rescaled_profile`) and
stores the forecast it gives (:func:`launch_forecast`) as the run's launch forecast: the
one ``costsched report`` sets beside what the run did.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from costsched.config.job import JobConfig
from costsched.cost.forecast import Forecast, RunProfile, forecast_from_profile
from costsched.cost.prices import PriceCatalog, rate_of_job
from costsched.errors import ConfigError
from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    ThroughputParams,
    ThroughputPoint,
    fit_throughput,
)
from costsched.scheduler.interfaces import RunLedger
from costsched.scheduler.job_models import FixedBatchThroughput
from costsched.training.schedule import BatchPlan

__all__ = ["PRIOR_CURVE_KEY", "PROFILED_CONFIG_KEY", "launch_forecast", "newest_plan",
           "prior_curve", "profile_from_detail", "profile_params", "rescaled_profile",
           "scheduled_curve", "submitted_plan"]

PRIOR_CURVE_KEY = "prior_curve"
"""Key, in a submitted plan's detail, of the config's last measured learning curve."""

_PROFILE_FIELDS = {f.name for f in dataclasses.fields(RunProfile)}


def profile_from_detail(detail: Mapping[str, Any]) -> RunProfile:
    """The :class:`RunProfile` a stored forecast's detail holds (other keys ignored)."""
    fields = {k: v for k, v in detail.items() if k in _PROFILE_FIELDS}
    fields["val_accuracy"] = tuple(fields.get("val_accuracy", ()))
    return RunProfile(**fields)


def newest_plan(ledger: RunLedger, config_hash: str) -> dict[str, Any] | None:
    """The newest before-launch forecast of ``config_hash`` with a profile, or None."""
    plans = [p for p in ledger.forecasts(config_hash=config_hash)
             if "step_s" in p["detail"]]
    return plans[-1] if plans else None


def prior_curve(ledger: RunLedger, config_hash: str) -> list[float]:
    """Validation accuracy per epoch of the newest finished run of ``config_hash`` in
    ``ledger`` (empty if none): its learning curve, measured."""
    return _newest_curve(ledger, lambda run: run["config_hash"] == config_hash)


def _newest_curve(ledger: RunLedger, chosen: Callable[[dict[str, Any]], bool]) -> list[float]:
    for run in reversed(ledger.runs()):
        if chosen(run) and run["final_metrics"]:
            history = json.loads(run["final_metrics"]).get("history", [])
            curve = [float(h["val_accuracy"]) for h in history if "val_accuracy" in h]
            if curve:
                return curve
    return []


PROFILED_CONFIG_KEY = "profiled_config"
"""Key, in a submitted plan's detail and a launch forecast's, of the hash of the config
the dry run profiled (the config file as written; a submission's overrides change the
submitted config's hash, not this one)."""


def scheduled_curve(ledger: RunLedger, profiled_config: str) -> list[float]:
    """Validation accuracy per epoch of the newest finished scheduled run whose launch
    forecast was made from a profile of ``profiled_config`` (the same config, submitted
    at any size): its learning curve, measured; empty if none."""
    launched = {f["run_id"] for f in ledger.forecasts()
                if f["run_id"] and f["detail"].get(PROFILED_CONFIG_KEY) == profiled_config}
    return _newest_curve(ledger, lambda run: run["run_id"] in launched)


def submitted_plan(ledger: RunLedger, config_hash: str) -> dict[str, Any] | None:
    """What ``costsched submit`` sends with a job: the newest dry-run forecast of its
    config (a ledger row, its detail the profile) with the config's last measured curve
    in the detail; None when no dry run of the config measured one."""
    plan = newest_plan(ledger, config_hash)
    if plan is None:
        return None
    curve = prior_curve(ledger, config_hash)
    return {**plan, "detail": {**plan["detail"], PRIOR_CURVE_KEY: curve,
                               PROFILED_CONFIG_KEY: config_hash}}


def profile_params(profile: RunProfile,
                   prior: ThroughputParams = DEFAULT_PRIOR) -> tuple[ThroughputParams, int]:
    """The throughput model a profile gives, and the nodes it ran on: ``prior`` fitted to
    its measured step (:func:`fit_throughput`, the scheduler's own fit: the measured
    compute sets the compute constants' scale, the measured sync the all-reduce's),
    or ``prior`` itself, on one node, when it measured none."""
    step = profile.step
    try:
        point = ThroughputPoint(
            num_nodes=int(step["num_nodes"]), num_replicas=int(step["num_workers"]),
            local_bsz=float(step["local_bsz"]), accum_steps=int(step["accum_steps"]),
            step_time_s=float(step["step_time_s"]),
            sync_time_s=min(float(step["sync_time_s"]), float(step["step_time_s"])))
    except (KeyError, TypeError, ValueError, ConfigError):
        return prior, 1
    return fit_throughput([point], prior), point.num_nodes


def rescaled_profile(profile: RunProfile, *, num_workers: int, num_nodes: int,
                     profiled_batch: int, batch: int, max_local_bsz: int,
                     prior: ThroughputParams = DEFAULT_PRIOR) -> RunProfile:
    """``profile`` as if it had run on ``num_workers`` workers over ``num_nodes`` nodes
    at global batch ``batch``: its step time scaled by the model's ratio,

        step_s' = step_s x T(num_nodes, num_workers, batch) / T(nodes, W, profiled_batch)

    where ``T`` is :meth:`FixedBatchThroughput.real_step_time_s` with the profile's
    model (:func:`profile_params`: ``prior``, the model the scheduler sizes unmeasured
    jobs with, fitted to the profile's measured step) and W the profile's workers.
    Start-up, epoch overhead and tail stay as measured. Unchanged at the profiled
    workers, nodes and batch."""
    params, nodes = profile_params(profile, prior)
    if (num_workers, num_nodes, batch) == (profile.num_workers, nodes, profiled_batch):
        return profile
    before = FixedBatchThroughput(params, profiled_batch, max_local_bsz).real_step_time_s(
        min(nodes, profile.num_workers), profile.num_workers)
    after = FixedBatchThroughput(params, batch, max_local_bsz).real_step_time_s(
        min(num_nodes, num_workers), num_workers)
    return dataclasses.replace(profile, num_workers=num_workers,
                               step_s=profile.step_s * after / before)


def launch_forecast(job: JobConfig, plan: Mapping[str, Any], *, num_train_rows: int,
                    num_nodes: int, profiled_batch: int, catalog: PriceCatalog,
                    batch: int | None = None,
                    prior: ThroughputParams = DEFAULT_PRIOR) -> tuple[Forecast, RunProfile]:
    """The forecast of a run of ``job`` as launched (its workers the run's, its price
    the nodes' it is billed at) from a submitted ``plan`` (:func:`submitted_plan`) of a
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
