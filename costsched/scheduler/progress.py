"""What a poll of a live job's run writes to its record (pure)."""

from __future__ import annotations

from typing import Any

from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.state import JobRecord


def running_fields(job: JobRecord, p: JobProgress, *, now: float) -> dict[str, Any]:
    """The record's progress fields after a poll ``p`` of ``job``'s running run.

    * ``last_step``: the run's own when it reports its total steps too (a report from
      its current attempt, which may be below the stored step after a restore from an
      older checkpoint: the steps since were lost and are left again); else the larger
      of the two (a poll before the attempt's first report says 0);
    * ``last_step_at``: when the run reported it, else now if the step moved on;
    * ``total_steps``: the run's, else the stored one (a new attempt says none yet);
    * ``eta_s``: the run's, None before its attempt has one.
    """
    last_step = p.last_step if p.total_steps else max(p.last_step, job.last_step)
    stepped = p.last_step > job.last_step
    return {"last_step": last_step,
            "last_step_at": p.last_step_at or (now if stepped else job.last_step_at),
            "total_steps": p.total_steps or job.total_steps, "eta_s": p.eta_s}


def stepped_this_attempt(p: JobProgress, started_at: float | None) -> bool:
    """Whether poll ``p`` reports a step of the attempt the controller started (or resized)
    at ``started_at``: until then its workers may not hold their slots yet (a poll during a
    resize still shows the attempt before). ``p.attempt_at`` is on the workers' clock,
    taken after the attempt's start-up: a worker clock behind the scheduler's by more than
    that would keep the job not stepping (no moves, its nodes held fuller), the safe way."""
    return p.attempt_at is not None and started_at is not None and p.attempt_at >= started_at
