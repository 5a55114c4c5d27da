"""A live job's spend by the controller's own count (pure).

The ledger learns of a run at its first report and is written at each report, so
between reports the controller counts the slots a job holds itself: attained
GPU-seconds at the job's rate, plus the time since the last round.
"""

from __future__ import annotations

from collections.abc import Callable

from costsched.cost.prices import JobRate, usd_over
from costsched.scheduler.state import RUNNING, JobRecord, JobStore


def held_usd(job: JobRecord, rate: JobRate) -> float:
    """What the accelerators the job has held cost, as of the last round."""
    return rate.usd_for_accelerator_s(job.attained_gpu_s)


def spent_now(job: JobRecord, rate: JobRate, gpus_per_worker: int, now: float) -> float:
    """Dollars spent as of ``now``: the larger of what the job's runs reported and the
    slots it has held, including those held since the last round, so a running job's
    spend moves between reports."""
    held = held_usd(job, rate)
    if job.state in RUNNING and job.accounted_at is not None:
        since_s = max(now - job.accounted_at, 0.0)
        # At the rate its run bills (the nodes it runs on), else the declared one.
        held += (usd_over(job.usd_per_hour, since_s) if job.usd_per_hour > 0 else
                 rate.usd_for_accelerator_s(job.workers * gpus_per_worker * since_s))
    return max(job.spent_usd, held)


def account(store: JobStore, now: float, gpus_per_worker: Callable[[JobRecord], int]) -> None:
    """Add each running job's GPU-seconds since it was last counted."""
    for job in store.jobs(RUNNING):
        since = job.accounted_at if job.accounted_at is not None else now
        gpus = job.workers * gpus_per_worker(job)
        store.update(job.job_id, accounted_at=now,
                     attained_gpu_s=job.attained_gpu_s + gpus * max(now - since, 0.0))
