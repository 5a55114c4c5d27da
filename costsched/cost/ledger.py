"""The cost ledger: one SQLite file (WAL) recording every run and its intervals.

A run is one training job from submission to its end. An interval is one
stretch of it at a fixed worker count: the first attempt, and one more after
each restart (failure, resize). An interval is priced at the node type and market
it ran on (``node_type``, ``node_spot``), or at the run's declared ones when that
was not known. Intervals are contiguous and never overlap,
so summing them counts every second once, including the time a failure
wasted (``lost_s``: from the last checkpoint to the failure), which users pay
for and which reports show separately.

Charges per interval, with ``d = ended_at - started_at`` and
``a = num_workers * accelerators_per_worker``:

    accelerator_s = a * d
    cost_usd      = compute_cost_usd(instance, spot, seconds=d, num_gpus=a)
    energy_kwh    = energy_kwh(instance, num_gpus=a, utilisation=u, seconds=d)
"""

from __future__ import annotations

import json
import os
from typing import Any

from costsched.cost.prices import PriceCatalog, compute_cost_usd, energy_kwh
from costsched.errors import CostschedError
from costsched.sqlite_file import SqliteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job_name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    spot INTEGER NOT NULL,
    utilisation REAL NOT NULL,
    budget_usd REAL NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL DEFAULT 'RUNNING',
    usd_to_target REAL,
    final_metrics TEXT
);
CREATE TABLE IF NOT EXISTS intervals (
    interval_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    num_workers INTEGER NOT NULL,
    accelerators_per_worker REAL NOT NULL,
    resources TEXT NOT NULL,
    last_checkpoint_at REAL,
    outcome TEXT NOT NULL DEFAULT 'RUNNING',
    lost_s REAL NOT NULL DEFAULT 0,
    node_type TEXT,
    node_spot INTEGER,
    UNIQUE (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS intervals_by_run ON intervals(run_id);
CREATE TABLE IF NOT EXISTS forecasts (
    forecast_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT,
    job_name TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    made_at REAL NOT NULL,
    source TEXT NOT NULL,
    at_epoch INTEGER NOT NULL,
    seconds_to_end REAL NOT NULL,
    usd_to_end REAL NOT NULL,
    seconds_to_target REAL,
    usd_to_target REAL,
    epochs_to_target REAL,
    target_reachable INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS forecasts_by_run ON forecasts(run_id);
"""
FORECAST_FIELDS = ("source", "at_epoch", "seconds_to_end", "usd_to_end", "seconds_to_target",
                   "usd_to_target", "epochs_to_target", "target_reachable")
"""A forecast's figures (:class:`costsched.cost.forecast.Forecast`), one column each."""

TERMINAL_INTERVAL_OUTCOMES = ("COMPLETED", "FAILED", "RESIZED", "STOPPED")
ADDED_COLUMNS = {"intervals": ("node_type TEXT", "node_spot INTEGER")}
"""Columns newer than the first schema, added to a ledger file that lacks them."""


def attempt_charged_from(intervals: list[dict[str, Any]], attempt_started_at: float) -> float:
    """Where an attempt that has not reported yet is charged from: its start, or the end
    of the run's last closed interval if later (intervals never overlap)."""
    return max([attempt_started_at,
                *(i["ended_at"] for i in intervals if i["outcome"] != "RUNNING")])


class Ledger:
    """Read and write the ledger file at ``path`` (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], catalog: PriceCatalog):
        self._file = SqliteFile(path, SCHEMA, "costsched ledger")
        self.path = self._file.path
        self._connect = self._file.transaction
        self.catalog = catalog
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        with self._connect() as db:
            for table, columns in ADDED_COLUMNS.items():
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    # -- writing ------------------------------------------------------------
    def start_run(
        self, *, run_id: str, job_name: str, config_hash: str, instance_type: str,
        spot: bool, utilisation: float, budget_usd: float, now: float,
    ) -> None:
        self.catalog.instance(instance_type)  # unknown types fail before anything is written
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (run_id, job_name, config_hash, instance_type, spot,"
                " utilisation, budget_usd, started_at) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, job_name, config_hash, instance_type, int(spot), utilisation,
                 budget_usd, now),
            )

    def open_interval(
        self, run_id: str, *, started_at: float, num_workers: int,
        accelerators_per_worker: float, resources: dict[str, float],
        node_type: str | None = None, node_spot: bool | None = None,
    ) -> int:
        """Start the next interval of ``run_id``, a running run; it must follow the last
        one. It is priced at ``node_type`` (and ``node_spot``), the nodes it runs on;
        None: the run's declared instance type (and market)."""
        if node_type is not None:
            self.catalog.instance(node_type)  # an unknown type fails before a write
        with self._connect() as db:
            run = db.execute("SELECT outcome FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if run is not None and run["outcome"] != "RUNNING":
                # Ended from outside (killed at its cap, stopped early): a late report
                # of its dying workers charges nothing more.
                raise CostschedError(f"run {run_id} has ended ({run['outcome']})")
            last = db.execute(
                "SELECT attempt, ended_at, outcome FROM intervals WHERE run_id=?"
                " ORDER BY attempt DESC LIMIT 1", (run_id,),
            ).fetchone()
            if last is not None and last["outcome"] == "RUNNING":
                raise CostschedError(f"run {run_id}: interval {last['attempt']} is still open")
            if last is not None and started_at < last["ended_at"]:
                raise CostschedError(f"run {run_id}: intervals may not overlap")
            attempt = 1 if last is None else last["attempt"] + 1
            cursor = db.execute(
                "INSERT INTO intervals (run_id, attempt, started_at, ended_at, num_workers,"
                " accelerators_per_worker, resources, node_type, node_spot)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, attempt, started_at, started_at, num_workers,
                 accelerators_per_worker, json.dumps(resources, sort_keys=True), node_type,
                 None if node_spot is None else int(node_spot)),
            )
            return int(cursor.lastrowid)

    def heartbeat(self, interval_id: int, *, now: float, checkpointed: bool = False) -> None:
        """Extend an open interval to ``now`` so a crashed driver loses no charges."""
        with self._connect() as db:
            db.execute(
                "UPDATE intervals SET ended_at=MAX(ended_at, ?),"
                " last_checkpoint_at=CASE WHEN ? THEN ? ELSE last_checkpoint_at END"
                " WHERE interval_id=? AND outcome='RUNNING'",
                (now, int(checkpointed), now, interval_id),
            )

    def close_interval(self, interval_id: int, *, now: float, outcome: str) -> None:
        """End an interval; a failure charges the work since its last checkpoint as lost."""
        if outcome not in TERMINAL_INTERVAL_OUTCOMES:
            raise ValueError(f"interval outcome must be one of {TERMINAL_INTERVAL_OUTCOMES}")
        with self._connect() as db:
            row = db.execute(
                "SELECT started_at, ended_at, last_checkpoint_at FROM intervals"
                " WHERE interval_id=? AND outcome='RUNNING'", (interval_id,),
            ).fetchone()
            if row is None:
                return  # already closed: closing twice must not charge twice
            ended = max(now, row["ended_at"])
            lost = 0.0
            if outcome == "FAILED":
                lost = ended - (row["last_checkpoint_at"] or row["started_at"])
            db.execute(
                "UPDATE intervals SET ended_at=?, outcome=?, lost_s=? WHERE interval_id=?",
                (ended, outcome, lost, interval_id),
            )

    def finish_run(
        self, run_id: str, *, now: float, outcome: str, final_metrics: dict[str, Any] | None = None
    ) -> None:
        """Close any open interval and record the run's outcome."""
        interval_outcome = "COMPLETED" if outcome in ("COMPLETED", "TARGET_REACHED") else "STOPPED"
        if outcome == "FAILED":
            interval_outcome = "FAILED"
        with self._connect() as db:
            open_ids = [
                r[0] for r in db.execute(
                    "SELECT interval_id FROM intervals WHERE run_id=? AND outcome='RUNNING'",
                    (run_id,),
                )
            ]
        for interval_id in open_ids:
            self.close_interval(interval_id, now=now, outcome=interval_outcome)
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET ended_at=?, outcome=?, final_metrics=? WHERE run_id=?",
                (now, outcome, json.dumps(final_metrics or {}, default=float), run_id),
            )

    def resume_run(self, run_id: str) -> bool:
        """Reopen a run whose driver died: close its open interval where its last
        heartbeat left it (as FAILED: the work since its checkpoint is lost) and
        mark it running again. Returns False if the run is unknown."""
        with self._connect() as db:
            row = db.execute("SELECT outcome FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return False
            open_ids = [r[0] for r in db.execute(
                "SELECT interval_id FROM intervals WHERE run_id=? AND outcome='RUNNING'",
                (run_id,))]
        for interval_id in open_ids:
            self.close_interval(interval_id, now=0.0, outcome="FAILED")  # at its heartbeat
        with self._connect() as db:
            db.execute("UPDATE runs SET outcome='RUNNING', ended_at=NULL WHERE run_id=?",
                       (run_id,))
        return True

    def close_abandoned_run(self, run_id: str, *, outcome: str, now: float | None = None) -> None:
        """End a run whose processes were killed from outside (e.g. early-stopped): its
        open interval ends ``now``, when the kill freed its workers, or at its last
        heartbeat when ``now`` is None (either way its work since the last checkpoint
        is lost); so does the run, with ``outcome``."""
        if now is not None:
            for interval in self.intervals(run_id):
                if interval["outcome"] == "RUNNING":
                    self.close_interval(interval["interval_id"], now=now, outcome="FAILED")
        self.resume_run(run_id)
        ended = max((r["ended_at"] for r in self.intervals(run_id)), default=None)
        with self._connect() as db:
            db.execute("UPDATE runs SET outcome=?, ended_at=COALESCE(?, started_at)"
                       " WHERE run_id=?", (outcome, ended, run_id))

    def end_at_cap(self, run_id: str, *, attempt_started_at: float, now: float,
                   num_workers: int, accelerators_per_worker: float,
                   resources: dict[str, float]) -> bool:
        """End a running run at its cap, at ``now``, in one step (nothing else writes
        between the check and the end). An open interval of this attempt ends ``now``;
        one a dead earlier attempt left open ends at its last heartbeat; an attempt that
        never reported is charged from ``attempt_started_at`` (or the last interval's
        end) as ``num_workers`` workers. All of it is lost work (FAILED); the run ends
        ``BUDGET_EXHAUSTED``. False, and nothing written, if the run is not running.
        One step because the ledger has one writer, which runs one call at a time."""
        with self._connect() as db:
            row = db.execute("SELECT outcome FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None or row["outcome"] != "RUNNING":
            return False
        reported = False
        for interval in self.intervals(run_id):
            if interval["outcome"] != "RUNNING":
                continue
            mine = interval["ended_at"] >= attempt_started_at
            reported = reported or mine
            self.close_interval(interval["interval_id"], now=now if mine else 0.0,
                                outcome="FAILED")
        if not reported:
            self.close_interval(self.open_interval(
                run_id, started_at=attempt_charged_from(self.intervals(run_id),
                                                        attempt_started_at),
                num_workers=num_workers,
                accelerators_per_worker=accelerators_per_worker, resources=resources),
                now=now, outcome="FAILED")
        ended = max(i["ended_at"] for i in self.intervals(run_id))
        with self._connect() as db:
            db.execute("UPDATE runs SET outcome='BUDGET_EXHAUSTED', ended_at=? WHERE run_id=?",
                       (ended, run_id))
        return True

    def record_target(self, run_id: str, *, usd_to_target: float) -> None:
        """Dollars spent when the run first reached its target (kept if already set)."""
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET usd_to_target=COALESCE(usd_to_target, ?) WHERE run_id=?",
                (usd_to_target, run_id),
            )

    def add_forecast(self, *, run_id: str | None, job_name: str, config_hash: str,
                     made_at: float, forecast: dict[str, Any],
                     detail: dict[str, Any] | None = None) -> int:
        """Store a forecast of a run (``run_id`` None: made before launch, for any run of
        ``config_hash``); ``forecast`` carries :data:`FORECAST_FIELDS`."""
        values = [forecast.get(name) for name in FORECAST_FIELDS]
        with self._connect() as db:
            cursor = db.execute(
                f"INSERT INTO forecasts (run_id, job_name, config_hash, made_at,"
                f" {', '.join(FORECAST_FIELDS)}, detail) VALUES"
                f" (?,?,?,?,{','.join('?' * len(FORECAST_FIELDS))},?)",
                (run_id, job_name, config_hash, made_at, *values,
                 json.dumps(detail or {}, default=float)))
            return int(cursor.lastrowid)

    # -- reading ------------------------------------------------------------
    def forecasts(self, run_id: str | None = None, *, config_hash: str | None = None,
                  source: str | None = None) -> list[dict[str, Any]]:
        """Forecasts, oldest first: of ``run_id``, or the before-launch ones of
        ``config_hash`` (not yet attached to a run), or all; only those of ``source``
        when given."""
        query, args = "SELECT * FROM forecasts WHERE 1=1", ()
        if run_id is not None:
            query, args = query + " AND run_id=?", (run_id,)
        elif config_hash is not None:
            query, args = query + " AND run_id IS NULL AND config_hash=?", (config_hash,)
        if source is not None:
            query, args = query + " AND source=?", (*args, source)
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query + " ORDER BY made_at, forecast_id",
                                                args)]
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows

    def runs(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            return [dict(r) for r in db.execute("SELECT * FROM runs ORDER BY started_at")]

    def intervals(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Intervals with their charges: accelerator_s, cost_usd, energy_kwh, lost_usd;
        ``instance_type`` and ``spot`` are what each was priced at."""
        query = (
            "SELECT i.*, COALESCE(i.node_type, r.instance_type) AS instance_type,"
            " COALESCE(i.node_spot, r.spot) AS spot, r.utilisation FROM intervals i"
            " JOIN runs r USING (run_id)"
        )
        args: tuple[Any, ...] = ()
        if run_id is not None:
            query += " WHERE run_id=?"
            args = (run_id,)
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(query + " ORDER BY run_id, attempt", args)]
        return [self._charge(r) for r in rows]

    def _charge(self, row: dict[str, Any]) -> dict[str, Any]:
        instance = self.catalog.instance(row["instance_type"])
        accelerators = row["num_workers"] * row["accelerators_per_worker"]
        seconds = row["ended_at"] - row["started_at"]
        spot = bool(row["spot"])
        row["accelerator_s"] = accelerators * seconds
        row["cost_usd"] = compute_cost_usd(instance, spot=spot, seconds=seconds,
                                           num_gpus=accelerators)
        row["lost_usd"] = compute_cost_usd(instance, spot=spot, seconds=row["lost_s"],
                                           num_gpus=accelerators)
        row["energy_kwh"] = energy_kwh(instance, num_gpus=accelerators,
                                       utilisation=row["utilisation"], seconds=seconds)
        return row

    def run_cost_usd(self, run_id: str) -> float:
        return sum(r["cost_usd"] for r in self.intervals(run_id))
