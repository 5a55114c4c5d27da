"""One row of ``costsched status`` from a job's record, config and fitted model (pure)."""

from __future__ import annotations

import logging
from typing import Any

from costsched.config.job import JobConfig
from costsched.cost.forecast import live_figures
from costsched.scheduler.alerts import job_alerts
from costsched.scheduler.interfaces import JobStatus, RunLedger
from costsched.scheduler.job_models import JobModel, status_figures
from costsched.scheduler.policy_view import fixed_batch_throughput, gpus_per_worker
from costsched.scheduler.state import RUNNING, JobRecord

log = logging.getLogger(__name__)


def status_row(job: JobRecord, config: JobConfig, *, now: float, stall_minutes: float,
               spent_usd: float, model: JobModel | None,
               ledger: RunLedger | None) -> JobStatus:
    """The job's status: a running job's rate, ETAs, forecast and measured figures; alerts."""
    per_worker = gpus_per_worker(config)
    running = job.state in RUNNING
    measured = {}
    if running and model is not None:
        measured = status_figures(
            model, fixed_batch_throughput(model, config), gpus=job.workers * per_worker,
            gpus_per_worker=per_worker, min_gpus=job.min_workers * per_worker,
            max_gpus=job.max_workers * per_worker, usd_per_hour=job.usd_per_hour)
    forecast = {}
    if running and ledger is not None and job.run_id:
        forecast = forecast_figures(ledger, job.run_id, now=now,
                                    has_target=config.training.target_metric is not None)
    return JobStatus(
        job_id=job.job_id, name=job.name, state=job.state, priority=job.priority,
        workers=job.workers, gpus=job.workers * per_worker, spent_usd=spent_usd,
        budget_usd=job.budget_usd, usd_per_hour=job.usd_per_hour if running else 0.0,
        eta_s=job.eta_s if running else None, restarts=job.restarts,
        preemptions=job.preemptions, spot_restarts=job.spot_restarts, failures=job.failures,
        last_step=job.last_step, total_steps=job.total_steps,
        alerts=tuple(str(a) for a in job_alerts(job, now=now, stall_minutes=stall_minutes)),
        **measured, **forecast)


def forecast_figures(ledger: RunLedger, run_id: str, *, has_target: bool,
                     now: float) -> dict[str, Any]:
    """What the run's newest refreshed forecast (:func:`live_figures`) says from
    ``now``: seconds left and dollars in all, to the target (to the last epoch without
    one), or that the target is out of reach; nothing before there is one.

        forecast_eta_s = session_started_at + seconds_to_target - now   (at least 0)
    """
    try:
        figures = live_figures(ledger.forecasts(run_id), ledger.intervals(run_id),
                               has_target=has_target)
    except Exception as exc:  # noqa: BLE001 - a forecast is a nicety; status must answer
        log.warning("reading the forecast of run %s failed: %s", run_id, exc)
        return {}
    if figures is None:
        return {}
    if figures.target_reachable is False:
        return {"target_reachable": False}
    if figures.seconds is None:
        return {}  # too few epochs for a curve yet
    return {"forecast_eta_s": max(figures.session_started_at + figures.seconds - now, 0.0),
            "forecast_usd": figures.usd, "target_reachable": figures.target_reachable}
