"""Each live job's measured restart costs, in the scheduler's state file (pure; no Ray).

The runner passes up, with each poll, the phases of the attempt now running
(:mod:`costsched.goodput.restart`); one row is kept per attempt, so a restarted
scheduler still plans each job's resizes with what its restarts really cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from costsched.goodput.restart import PHASES, restart_seconds, stop_reserve_s
from costsched.sqlite_file import SqliteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS restart_costs (
    job_id TEXT NOT NULL,
    attempt_at REAL NOT NULL,
    phases TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt_at)
);
"""


class RestartCosts:
    """Per-attempt restart phases of every job."""

    def __init__(self, path: str | os.PathLike[str]):
        self._connect = SqliteFile(path, SCHEMA, "costsched scheduler state file").transaction

    def record(self, job_id: str, attempt_at: float, phases: Mapping[str, float], *,
               now: float) -> bool:
        """Keep the attempt's phases; True when the attempt is new (False: known already)."""
        row = {phase: float(phases[phase]) for phase in PHASES if phase in phases}
        with self._connect() as db:
            cursor = db.execute("INSERT OR IGNORE INTO restart_costs VALUES (?, ?, ?, ?)",
                                (job_id, float(attempt_at), json.dumps(row), now))
            return cursor.rowcount == 1

    def phases(self, job_id: str) -> list[dict[str, float]]:
        """The job's attempts' phases, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT phases FROM restart_costs WHERE job_id=? ORDER BY "
                              "attempt_at", (job_id,)).fetchall()
        return [json.loads(r["phases"]) for r in rows]

    def seconds(self, job_id: str) -> float | None:
        """The restart penalty to plan the job with (median measured restart); None
        before its first measured restart."""
        return restart_seconds(self.phases(job_id))

    def stop_reserve_s(self, job_id: str, *, prior: float) -> float:
        """Seconds of the job's budget kept for stopping it (its measured stops, else
        ``prior``; see :func:`costsched.goodput.restart.stop_reserve_s`)."""
        return stop_reserve_s(self.phases(job_id), prior)
