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
from collections.abc import Mapping
from typing import Any

from costsched.config.job import JobConfig
from costsched.cost.forecast import Forecast, RunProfile, forecast_from_profile
from costsched.cost.prices import PriceCatalog, rate_of_job
from costsched.goodput.throughput import DEFAULT_PRIOR, ThroughputParams
from costsched.scheduler.interfaces import RunLedger
from costsched.scheduler.job_models import FixedBatchThroughput
from costsched.training.schedule import BatchPlan

__all__ = ["PRIOR_CURVE_KEY", "launch_forecast", "newest_plan", "prior_curve",
           "profile_from_detail", "rescaled_profile", "submitted_plan"]

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
    for run in reversed(ledger.runs()):  # type: ignore[attr-defined]
        if run["config_hash"] == config_hash and run["final_metrics"]:
            history = json.loads(run["final_metrics"]).get("history", [])
            curve = [float(h["val_accuracy"]) for h in history if "val_accuracy" in h]
            if curve:
                return curve
    return []


def submitted_plan(ledger: RunLedger, config_hash: str) -> dict[str, Any] | None:
    """What ``costsched submit`` sends with a job: the newest dry-run forecast of its
    config (a ledger row, its detail the profile) with the config's last measured curve
    in the detail; None when no dry run of the config measured one."""
    plan = newest_plan(ledger, config_hash)
    if plan is None:
        return None
    curve = prior_curve(ledger, config_hash)
    return {**plan, "detail": {**plan["detail"], PRIOR_CURVE_KEY: curve}}


def rescaled_profile(profile: RunProfile, *, num_workers: int, num_nodes: int,
                     profiled_batch: int, batch: int, max_local_bsz: int,
                     prior: ThroughputParams = DEFAULT_PRIOR) -> RunProfile:
    """``profile`` as if it had run on ``num_workers`` workers over ``num_nodes`` nodes
    at global batch ``batch``: its step time scaled by the throughput prior's ratio,

        step_s' = step_s x T(num_nodes, num_workers, batch) / T(1, W, profiled_batch)

    where ``T`` is :meth:`FixedBatchThroughput.real_step_time_s` with ``prior`` (the
    model the scheduler sizes unmeasured jobs with; W the profile's workers, assumed on
    one node). Start-up, epoch overhead and tail stay as measured. Unchanged at the
    profiled size and batch on one node."""
    if (num_workers, num_nodes, batch) == (profile.num_workers, 1, profiled_batch):
        return profile
    before = FixedBatchThroughput(prior, profiled_batch, max_local_bsz).real_step_time_s(
        1, profile.num_workers)
    after = FixedBatchThroughput(prior, batch, max_local_bsz).real_step_time_s(
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
