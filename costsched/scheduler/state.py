"""Durable scheduler state: one SQLite file (WAL) of jobs and their event log.

Each job row is the truth about the job between rounds; every state change is
one transaction that also appends an event, so a controller that dies mid-round
restarts from a consistent table and ``costsched logs JOB`` shows the history.
Legal transitions are listed in :data:`TRANSITIONS`; anything else raises.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costsched.config.strict import closest_hint
from costsched.cost.formatting import format_usd
from costsched.errors import CostschedError
from costsched.sqlite_file import SqliteFile

ACTIVE = ("QUEUED", "RUNNING", "RESIZING", "PREEMPTED")
"""States of a job the scheduler still manages."""
TERMINAL = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED", "FAILED", "CANCELLED")
"""States a job never leaves."""
WAITING = ("QUEUED", "PREEMPTED")
"""Active states holding no workers."""
RUNNING = ("RUNNING", "RESIZING")
"""Active states holding workers."""
TRANSITIONS: dict[str, frozenset[str]] = {
    "QUEUED": frozenset({"RUNNING", "CANCELLED", "BUDGET_EXHAUSTED", "FAILED"}),
    "PREEMPTED": frozenset({"RUNNING", "CANCELLED", "BUDGET_EXHAUSTED", "FAILED"}),
    "RUNNING": frozenset({"RESIZING", "PREEMPTED", "QUEUED", *TERMINAL}),
    "RESIZING": frozenset({"RUNNING", "PREEMPTED", "QUEUED", *TERMINAL}),
    **{state: frozenset() for state in TERMINAL},
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    config_yaml TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    priority INTEGER NOT NULL,
    budget_usd REAL NOT NULL,
    min_workers INTEGER NOT NULL,
    max_workers INTEGER NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    workers INTEGER NOT NULL DEFAULT 0,
    placement TEXT NOT NULL DEFAULT '{}',
    restarts INTEGER NOT NULL DEFAULT 0,
    preemptions INTEGER NOT NULL DEFAULT 0,
    spot_restarts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    spent_usd REAL NOT NULL DEFAULT 0,
    usd_per_hour REAL NOT NULL DEFAULT 0,
    eta_s REAL,
    attained_gpu_s REAL NOT NULL DEFAULT 0,
    last_step INTEGER NOT NULL DEFAULT 0,
    last_step_at REAL,
    total_steps INTEGER,
    accounted_at REAL,
    run_id TEXT NOT NULL DEFAULT '',
    checkpoint_path TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS events (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_id, event_id);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(job_id)
);
"""

MUTABLE = frozenset({
    "started_at", "ended_at", "workers", "placement", "restarts", "preemptions",
    "spot_restarts", "failures", "spent_usd", "usd_per_hour", "eta_s", "attained_gpu_s",
    "last_step", "last_step_at", "total_steps", "accounted_at", "run_id", "checkpoint_path",
    "message",
})
"""Columns :meth:`JobStore.update` may write (identity and config never change)."""


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """One row of the jobs table."""

    job_id: str
    """Unique id: the job's name and its submission number."""
    name: str
    """The job config's name."""
    config_yaml: str
    """The submitted config, overrides applied."""
    config_hash: str
    """JobConfig.config_hash() of it."""
    priority: int
    """Higher runs first."""
    budget_usd: float
    """Dollars the job may spend in all."""
    min_workers: int
    """Fewest workers it runs on."""
    max_workers: int
    """Most workers it uses."""
    state: str
    """One of ACTIVE or TERMINAL."""
    submitted_at: float
    """Submission time, clock seconds."""
    started_at: float | None
    """First start, or None."""
    ended_at: float | None
    """When it reached a terminal state, or None."""
    workers: int
    """Workers it holds now (0 when waiting)."""
    placement: dict[str, int]
    """Accelerator slots it holds per node."""
    restarts: int
    """Restarts from a checkpoint, for any reason."""
    preemptions: int
    """Times a higher-priority job took its workers."""
    spot_restarts: int
    """Restarts caused by node loss or spot reclaim (not the job's fault)."""
    failures: int
    """Restarts caused by the job's own errors (counted against max_failures)."""
    spent_usd: float
    """Dollars spent so far, all attempts."""
    usd_per_hour: float
    """Burn rate now (0 when waiting)."""
    eta_s: float | None
    """Runner's estimate of seconds left, or None."""
    attained_gpu_s: float
    """GPU-seconds held so far."""
    last_step: int
    """Latest optimiser step."""
    last_step_at: float | None
    """When it was reported."""
    total_steps: int | None
    """Optimiser steps the run takes in all (its epochs at its batch), as its run last
    reported; None before it has."""
    accounted_at: float | None
    """Up to when attained service was counted."""
    run_id: str
    """Runner's run id ('' before the first start)."""
    checkpoint_path: str
    """Where restarts resume from."""
    message: str
    """Latest note (error, stop reason)."""


def _record(row: sqlite3.Row) -> JobRecord:
    values = dict(row)
    del values["seq"]
    values["placement"] = json.loads(values["placement"])
    return JobRecord(**values)


class JobStore:
    """The jobs and events tables in the SQLite file at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]):
        self._file = SqliteFile(path, SCHEMA, "costsched scheduler state file",
                                added_columns=(("jobs", "total_steps", "INTEGER"),))
        self.path = self._file.path
        self._connect = self._file.transaction

    # -- writing ------------------------------------------------------------
    def add_job(self, *, name: str, config_yaml: str, config_hash: str, priority: int,
                budget_usd: float, min_workers: int, max_workers: int, now: float,
                request_id: str | None = None) -> JobRecord:
        """Insert a QUEUED job with a fresh id ``NAME-N`` and log its submission. A
        ``request_id`` seen before returns the job it made instead (a retried submit)."""
        with self._connect() as db:
            if request_id is not None:
                known = db.execute("SELECT job_id FROM requests WHERE request_id=?",
                                   (request_id,)).fetchone()
                if known is not None:
                    return self.get(known[0])
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            job_id = f"{name}-{seq}"
            db.execute(
                "INSERT INTO jobs (seq, job_id, name, config_yaml, config_hash, priority,"
                " budget_usd, min_workers, max_workers, state, submitted_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,'QUEUED',?)",
                (seq, job_id, name, config_yaml, config_hash, priority, budget_usd,
                 min_workers, max_workers, now),
            )
            _event(db, job_id, now, "submitted",
                   f"priority {priority}, budget ${format_usd(budget_usd)}, "
                   f"{min_workers}-{max_workers} workers")
            if request_id is not None:
                db.execute("INSERT INTO requests VALUES (?, ?)", (request_id, job_id))
        return self.get(job_id)

    def transition(self, job_id: str, state: str, *, now: float, kind: str,
                   detail: str = "", **fields: Any) -> bool:
        """Move ``job_id`` to ``state``, write ``fields`` and log an event, atomically.

        Moving to the state it is already in is a no-op returning False, so an
        action repeated after a controller restart does nothing twice. An
        illegal move raises CostschedError and changes nothing.
        """
        with self._connect() as db:
            current = _state(db, job_id)
            if current == state:
                return False
            if state not in TRANSITIONS[current]:
                raise CostschedError(f"job {job_id} is {current}; it cannot become {state}")
            if state in TERMINAL:
                fields.setdefault("ended_at", now)
                fields.setdefault("workers", 0)
                fields.setdefault("placement", {})
                fields.setdefault("usd_per_hour", 0.0)
            _write(db, job_id, {"state": state, **fields})
            _event(db, job_id, now, kind, detail or f"{current} -> {state}")
        return True

    def update(self, job_id: str, **fields: Any) -> None:
        """Write progress fields (no state change, no event)."""
        with self._connect() as db:
            _state(db, job_id)
            _write(db, job_id, fields)

    def log(self, job_id: str, *, now: float, kind: str, detail: str) -> None:
        """Append an event to the job's log."""
        with self._connect() as db:
            _state(db, job_id)
            _event(db, job_id, now, kind, detail)

    # -- reading ------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row is None:
                raise _unknown(db, job_id)
            return _record(row)

    def jobs(self, states: tuple[str, ...] | None = None) -> list[JobRecord]:
        """Jobs in submission order, optionally only those in ``states``."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY seq").fetchall()
        records = [_record(r) for r in rows]
        return [r for r in records if states is None or r.state in states]

    def run_started_at(self, job_id: str) -> float | None:
        """When the job's current run began: its last start, resume or resize event."""
        with self._connect() as db:
            row = db.execute("SELECT MAX(at) AS at FROM events WHERE job_id=? AND kind IN "
                             "('started', 'resumed', 'resizing')", (job_id,)).fetchone()
        return None if row is None else row["at"]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's log, oldest first: dicts of at, kind, detail."""
        self.get(job_id)
        with self._connect() as db:
            return [dict(r) for r in db.execute(
                "SELECT at, kind, detail FROM events WHERE job_id=? ORDER BY event_id",
                (job_id,))]


def _state(db: sqlite3.Connection, job_id: str) -> str:
    row = db.execute("SELECT state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
    if row is None:
        raise _unknown(db, job_id)
    return row[0]


def _unknown(db: sqlite3.Connection, job_id: str) -> CostschedError:
    known = [r[0] for r in db.execute("SELECT job_id FROM jobs ORDER BY seq DESC LIMIT 50")]
    hint = closest_hint(job_id, known) if known else "; no jobs have been submitted"
    return CostschedError(f"unknown job id `{job_id}`{hint}")


def _write(db: sqlite3.Connection, job_id: str, fields: Mapping[str, Any]) -> None:
    bad = set(fields) - MUTABLE - {"state"}
    if bad:
        raise ValueError(f"cannot write job columns {sorted(bad)}")
    values = {k: json.dumps(v, sort_keys=True) if k == "placement" else v
              for k, v in fields.items()}
    if values:
        sets = ", ".join(f"{k}=?" for k in values)
        db.execute(f"UPDATE jobs SET {sets} WHERE job_id=?", (*values.values(), job_id))


def _event(db: sqlite3.Connection, job_id: str, now: float, kind: str, detail: str) -> None:
    db.execute("INSERT INTO events (job_id, at, kind, detail) VALUES (?,?,?,?)",
               (job_id, now, kind, detail))
