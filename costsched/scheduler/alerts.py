"""Alerts on running jobs (pure): stalled progress and budget burn.

* stall: no new optimiser step for ``stall_minutes`` (since the last step, or
  since the start when none has been reported);
* burn: ``usd_per_hour * eta_s / 3600 > budget_usd - spent_usd``: at its
  current rate the job will run out of money before it reaches its target.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from costsched.cost.formatting import format_usd
from costsched.cost.prices import usd_over
from costsched.scheduler.interfaces import Action, ResourceBundle, TickReport
from costsched.scheduler.state import RUNNING, JobRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One problem with one job."""

    job_id: str
    """The job."""
    kind: str
    """``stall`` or ``burn``."""
    message: str
    """One line for people."""

    def __str__(self) -> str:
        return f"{self.job_id}: {self.message}"


def job_alerts(job: JobRecord, *, now: float, stall_minutes: float) -> list[Alert]:
    """Alerts for one job (none unless it is running)."""
    if job.state not in RUNNING:
        return []
    found = []
    since = job.last_step_at if job.last_step_at is not None else job.started_at
    if since is not None and now - since > stall_minutes * 60.0:
        found.append(Alert(job_id=job.job_id, kind="stall", message=(
            f"stalled: no step for {(now - since) / 60.0:.0f} min "
            f"(last step {job.last_step}, limit {stall_minutes:g} min)")))
    if job.eta_s is not None and job.usd_per_hour > 0:
        need_usd = usd_over(job.usd_per_hour, job.eta_s)
        left_usd = job.budget_usd - job.spent_usd
        if need_usd > left_usd:
            found.append(Alert(job_id=job.job_id, kind="burn", message=(
                f"over budget at this rate: ${format_usd(need_usd)} more needed to finish, "
                f"${format_usd(left_usd)} left of ${format_usd(job.budget_usd)}")))
    return found


def all_alerts(jobs: list[JobRecord], *, now: float, stall_minutes: float) -> list[Alert]:
    return [a for job in jobs for a in job_alerts(job, now=now, stall_minutes=stall_minutes)]


def tick_report(running: Iterable[JobRecord], *, now: float, stall_minutes: float,
                actions: Sequence[Action],
                requested: tuple[ResourceBundle, ...] | None) -> TickReport:
    """A round's report: its actions and the alerts on ``running`` jobs (each logged)."""
    alerts = all_alerts(running, now=now, stall_minutes=stall_minutes)
    for alert in alerts:
        log.warning("%s", alert)
    return TickReport(time_s=now, actions=tuple(actions), alerts=tuple(str(a) for a in alerts),
                      requested=requested)
