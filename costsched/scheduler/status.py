"""One row of ``costsched status`` from a job's record, config and fitted model (pure)."""

from __future__ import annotations

from costsched.config.job import JobConfig
from costsched.scheduler.alerts import job_alerts
from costsched.scheduler.interfaces import JobStatus
from costsched.scheduler.job_models import JobModel, status_figures
from costsched.scheduler.policy_view import fixed_batch_throughput, gpus_per_worker
from costsched.scheduler.state import RUNNING, JobRecord


def status_row(job: JobRecord, config: JobConfig, *, now: float, stall_minutes: float,
               spent_usd: float, model: JobModel | None) -> JobStatus:
    """The job's status: a running job's rate, ETA and measured figures; alerts."""
    per_worker = gpus_per_worker(config)
    running = job.state in RUNNING
    measured = {}
    if running and model is not None:
        measured = status_figures(
            model, fixed_batch_throughput(model, config), gpus=job.workers * per_worker,
            gpus_per_worker=per_worker, min_gpus=job.min_workers * per_worker,
            max_gpus=job.max_workers * per_worker, usd_per_hour=job.usd_per_hour)
    return JobStatus(
        job_id=job.job_id, name=job.name, state=job.state, priority=job.priority,
        workers=job.workers, gpus=job.workers * per_worker, spent_usd=spent_usd,
        budget_usd=job.budget_usd, usd_per_hour=job.usd_per_hour if running else 0.0,
        eta_s=job.eta_s if running else None, restarts=job.restarts,
        preemptions=job.preemptions, spot_restarts=job.spot_restarts, failures=job.failures,
        alerts=tuple(str(a) for a in job_alerts(job, now=now, stall_minutes=stall_minutes)),
        **measured)
