"""A short real run of a job on its target resources, measured for forecasts.

The profile is the job itself, on the workers and resources it asks for, for
:data:`PROFILE_EPOCHS` epochs with its target switched off, each epoch trimmed to
at most :func:`profile_steps` steps. Its own temporary ledger and storage keep it
out of the job's records. What it measures (:class:`~costsched.cost.forecast.RunProfile`):

* start-up: the ledger's first charged second to the end of epoch 1, less one
  steady epoch (worker group, data shard, first-step warm-up);
* the steady pace: per step and per epoch beyond its steps, from epochs 2 on;
* the tail: the last epoch's end to the ledger's last charged second.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import ray

from costsched.config.job import JobConfig
from costsched.cost.accounting import record_plan_forecast
from costsched.cost.forecast import (
    Forecast,
    RunProfile,
    forecast_from_profile,
    measured_profile,
    profile_rows,
)
from costsched.cost.ledger import Ledger
from costsched.cost.plans import newest_plan, prior_curve, profile_from_detail
from costsched.cost.prices import PriceCatalog, rate_of_job
from costsched.ray_layer.ledger import RemoteLedger, ledger_for
from costsched.ray_layer.train.trainer import run_job
from costsched.scheduler.job_models import STEP_FIELDS, measurement_from_report
from costsched.training.data import Splits
from costsched.training.schedule import BatchPlan

PROFILE_EPOCHS = 3
"""Epochs a profile runs: the first carries the start-up, the rest give the pace."""


def steps_per_epoch(job: JobConfig, num_train_rows: int) -> int:
    plan = BatchPlan(global_batch_size=job.training.global_batch_size,
                     world_size=job.scaling.max_workers, rank=0,
                     micro_batch_size=job.training.micro_batch_size)
    return plan.steps_per_epoch(num_train_rows)


def profile_job(job: JobConfig, splits: Splits, catalog: PriceCatalog, *,
                charge_to: tuple[RemoteLedger, str] | None = None) -> RunProfile:
    """Run the profile on the connected Ray cluster and measure it (see the module).

    ``charge_to`` (a ledger and a run id): record the profile there as that run, so
    what it cost counts (a sweep's budget); else it goes to a throwaway ledger."""
    rows = profile_rows(job, len(splits.x_train), steps_per_epoch(job, len(splits.x_train)))
    trimmed = dataclasses.replace(splits, x_train=splits.x_train[:rows],
                                  y_train=splits.y_train[:rows])
    with tempfile.TemporaryDirectory(prefix="costsched-profile-") as tmp:
        probe = dataclasses.replace(
            job, name=f"{job.name}-profile", storage_path=str(Path(tmp) / "runs"),
            ledger_path=str(Path(tmp) / "ledger.db"),
            training=dataclasses.replace(job.training, num_epochs=PROFILE_EPOCHS,
                                         target_metric=None))
        ledger, run_id = charge_to or (ledger_for(probe.resolved_ledger_path(), catalog), None)
        try:
            # The job's own learning-rate schedule: a 3-epoch one decays by its end, and
            # its curve would run ahead of the job's.
            result = run_job(probe, trimmed, catalog=catalog, ledger=ledger, verbose=False,
                             run_id=run_id, schedule_epochs=job.training.num_epochs)
            run = next(r for r in ledger.runs() if r["run_id"] == result.run_id)
            charged_until = max(i["ended_at"] for i in ledger.intervals(result.run_id))
        finally:
            if charge_to is None:
                ray.kill(ledger.actor)  # a detached actor: it would outlive the profile
    profile = measured_profile(result.metrics.get("history", []),
                               num_workers=job.scaling.max_workers,
                               started_at=run["started_at"], charged_until=charged_until)
    step = measurement_from_report(result.metrics)
    if step is not None:  # how its step splits into compute and sync: rescales it
        profile = dataclasses.replace(profile, num_workers=step.num_workers,
                                      step={k: getattr(step, k) for k in STEP_FIELDS})
    # A trimmed epoch learns less than the job's: its curve says nothing of the job's.
    return profile if rows == len(splits.x_train) else dataclasses.replace(
        profile, val_accuracy=())


def forecast_job(job: JobConfig, splits: Splits, catalog: PriceCatalog, *,
                 ledger: RemoteLedger | None = None, charge_as: str | None = None,
                 ) -> tuple[RunProfile, Forecast]:
    """Profile ``job``, forecast its run and store the forecast in the job's ledger
    (``ledger``, else the job's own), where its next run picks it up. ``charge_as``:
    the profile is charged to ``ledger`` as that run."""
    ledger = ledger or ledger_for(job.resolved_ledger_path(), catalog)
    profile = profile_job(job, splits, catalog,
                          charge_to=(ledger, charge_as) if charge_as else None)
    forecast = forecast_of(job, profile, splits, catalog,
                           prior=prior_curve(ledger, job.config_hash()))
    record_plan_forecast(ledger, job, forecast, now=time.time(),
                         detail=dataclasses.asdict(profile))
    return profile, forecast


def forecast_of(job: JobConfig, profile: RunProfile, splits: Splits, catalog: PriceCatalog,
                *, prior: list[float] | None = None) -> Forecast:
    """The before-launch forecast of ``job`` from its ``profile``."""
    return forecast_from_profile(
        profile, rate=rate_of_job(job, catalog), num_epochs=job.training.num_epochs,
        steps_per_epoch=steps_per_epoch(job, len(splits.x_train)),
        target=job.training.target_value if job.training.target_metric else None,
        prior_curve=prior or [])


def stored_profile(ledger: Ledger | RemoteLedger, job: JobConfig) -> RunProfile | None:
    """The newest profile of ``job``'s configuration a dry run stored in ``ledger``."""
    plan = newest_plan(ledger, job.config_hash())
    return None if plan is None else profile_from_detail(plan["detail"])
