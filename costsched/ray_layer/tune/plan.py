"""A sweep's trial plan from a real profile of its base job (stored, or measured now)."""

from __future__ import annotations

import dataclasses
import time

from costsched.config.job import JobConfig
from costsched.cost.forecast import Forecast, RunProfile
from costsched.cost.prices import PriceCatalog, rate_of_job
from costsched.ray_layer.ledger import RemoteLedger
from costsched.ray_layer.train.profile import (
    forecast_job,
    forecast_of,
    steps_per_epoch,
    stored_profile,
)
from costsched.sweep.config import LoadedSweep
from costsched.sweep.plan import TrialPlan, plan_trials
from costsched.training.data import Splits

PROFILE_RUN_INFIX = "-profile-"
"""The sweep's profile is charged to its ledger as run ``<sweep name>-profile-<time>``
(the budget gate counts every run named ``<sweep name>-...``)."""


def planning_job(sweep: LoadedSweep) -> JobConfig:
    """The base job aimed at the sweep's target: what the profile measures."""
    job = sweep.base_job
    return dataclasses.replace(job, training=dataclasses.replace(
        job.training, target_metric="val_accuracy", target_value=sweep.config.target_value))


def trial_plan(sweep: LoadedSweep, splits: Splits, catalog: PriceCatalog,
               ledger: RemoteLedger, *, measure: bool) -> tuple[TrialPlan, RunProfile,
                                                                Forecast] | None:
    """The plan from the profile ``ledger`` holds for the base job; without one,
    measured now (``measure``; charged to the sweep) or None."""
    job = planning_job(sweep)
    profile = stored_profile(ledger, job)
    if profile is not None:
        forecast = forecast_of(job, profile, splits, catalog)
    elif measure:
        profile, forecast = forecast_job(job, splits, catalog, ledger=ledger,
                                         charge_as=f"{sweep.config.name}{PROFILE_RUN_INFIX}"
                                                   f"{time.strftime('%Y%m%d-%H%M%S')}")
    else:
        return None
    plan = plan_trials(sweep.config, profile, forecast, rate=rate_of_job(job, catalog),
                       steps_per_epoch=steps_per_epoch(job, len(splits.x_train)))
    return plan, profile, forecast
