"""Each live job's measured goodput, and the models fitted to it (pure; no Ray).

Workers measure their steps (time, gradient sync, noise scale) and report them; the
runner passes the latest :class:`Measurement` up with each poll. This store keeps one
mean step per configuration (workers, nodes, local batch, accumulation) in the
scheduler's SQLite file, and the constants of Pollux's throughput model fitted to them,
so a restarted scheduler plans with what its jobs measured. When to refit, from where
and with which prior is the simulator's learner's
(:class:`~costsched.goodput.online.OnlineThroughput`, rebuilt from the file for each
measurement): a first measurement, or a step more than
:data:`~costsched.goodput.online.REFIT_CHANGE` off the fit's prediction, refits, starting
also from the previous fit. :class:`FixedBatchThroughput`
turns a fit into what the policy needs for a job whose global batch is fixed.

It also keeps each job's training curve, one row per completed epoch (``job_curve``):
the first report seen with that epoch count (the one closest to the epoch's end, as
the scheduler sees only each poll's latest report), its global step, validation
metric, gradient statistics and global batch. ``costsched profile export`` turns
steps and curve into a simulator profile (:mod:`costsched.goodput.profile`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from costsched.cost.prices import usd_over
from costsched.errors import ConfigError
from costsched.goodput.online import OnlineThroughput, config_key
from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    ThroughputParams,
    ThroughputPoint,
    predict_step_time_s,
)
from costsched.sqlite_file import SqliteFile


def _steps_table(name: str, owner: str) -> str:
    """A table of measured steps, one mean per configuration of each ``owner``."""
    return f"""
CREATE TABLE IF NOT EXISTS {name} (
    {owner} TEXT NOT NULL,
    num_workers INTEGER NOT NULL,
    num_nodes INTEGER NOT NULL,
    local_bsz REAL NOT NULL,
    accum_steps INTEGER NOT NULL,
    step_time_s REAL NOT NULL,
    sync_time_s REAL NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY ({owner}, num_workers, num_nodes, local_bsz, accum_steps)
);"""


# A job's own steps, the steps it adopted from a pool, and the pools (by share key).
SCHEMA = _steps_table("measurements", "job_id") + _steps_table(
    "adopted_measurements", "job_id") + _steps_table("shared_measurements", "share_key") + """
CREATE TABLE IF NOT EXISTS job_models (
    job_id TEXT PRIMARY KEY,
    params TEXT,
    num_points INTEGER NOT NULL DEFAULT 0,
    grad_sqr REAL,
    grad_var REAL,
    samples_per_s REAL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS job_curve (
    job_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    global_step INTEGER NOT NULL,
    metric REAL,
    grad_sqr REAL,
    grad_var REAL,
    global_batch_size INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
"""
log = logging.getLogger(__name__)

CURVE_METRIC = "val_accuracy"
"""The report key kept as a curve row's metric: the built-in loop's per-epoch validation
accuracy (``test_accuracy`` comes only once, at the end)."""


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What a running job last measured, at one configuration."""

    num_workers: int
    num_nodes: int
    local_bsz: float
    """Examples per worker per micro-batch."""
    accum_steps: int
    step_time_s: float
    """Mean seconds per optimiser step at this configuration."""
    sync_time_s: float
    """Of which gradient synchronisation."""
    samples_per_s: float | None = None
    grad_sqr: float | None = None
    grad_var: float | None = None
    """Smoothed |G|^2 and tr(Sigma) (the variance of one example's gradient), when measured."""
    epoch: int | None = None
    """Epochs completed when the report was made (the built-in loop's ``epoch``)."""
    global_step: int | None = None
    """Optimiser steps the run had made."""
    metric: float | None = None
    """The report's :data:`CURVE_METRIC`, when it carried one (end of an epoch)."""
    global_batch_size: int | None = None
    """Examples per optimiser step over all workers (workers x micro-batch x accumulation
    when the report does not say; one or two high when the batch splits unevenly)."""


STEP_FIELDS = ("num_workers", "num_nodes", "local_bsz", "accum_steps", "step_time_s",
               "sync_time_s")
"""The fields of a :class:`Measurement` that time one step (the rest are optional)."""


def measurement_from_report(report: Mapping[str, Any]) -> Measurement | None:
    """The step measurement a run's report (or progress record) carried, with its curve
    fields; None when it measured no step. A malformed optional field is left out."""
    def optional(key: str, kind: type) -> Any:
        try:
            return None if report.get(key) is None else kind(report[key])
        except (TypeError, ValueError):
            return None

    try:
        workers, local = int(report["world_size"]), float(report["local_bsz"])
        accum = int(report["accum_steps"])
        step = Measurement(
            num_workers=workers, num_nodes=int(report["num_nodes"]), local_bsz=local,
            accum_steps=accum, step_time_s=float(report["step_time_s"]),
            sync_time_s=float(report["sync_time_s"]))
    except (KeyError, TypeError, ValueError):
        return None
    return replace(
        step, samples_per_s=optional("samples_per_s", float),
        grad_sqr=optional("grad_sqr", float), grad_var=optional("grad_var", float),
        epoch=optional("epoch", int), global_step=optional("global_step", int),
        metric=optional(CURVE_METRIC, float),
        global_batch_size=optional("global_batch_size", int) or round(workers * local * accum))


@dataclass(frozen=True, kw_only=True)
class CurvePoint:
    """One completed epoch of a job's run, as its report said (a ``job_curve`` row)."""

    epoch: int
    """Epochs completed (1 after the first)."""
    global_step: int
    """Optimiser steps by then (a little past the epoch's end when its own report was
    not the one polled)."""
    metric: float | None
    """The validation metric after the epoch, when reported."""
    grad_sqr: float | None
    grad_var: float | None
    """Smoothed |G|^2 and per-example tr(Sigma) then, when measured."""
    global_batch_size: int
    """Examples per optimiser step."""


@dataclass(frozen=True, kw_only=True)
class JobModel:
    """A job's fitted model and latest figures."""

    params: ThroughputParams
    num_points: int
    """Configurations the fit used (0: the prior only)."""
    most_replicas_tried: int
    """Most workers of any measured configuration (the exploration cap doubles it)."""
    samples_per_s: float | None
    grad_sqr: float | None
    grad_var: float | None

    @classmethod
    def of(cls, learner: OnlineThroughput, *, samples_per_s: float | None = None,
           grad_sqr: float | None = None, grad_var: float | None = None) -> JobModel:
        """``learner``'s fit, with the latest figures given."""
        return cls(params=learner.params, num_points=learner.num_points_fitted,
                   most_replicas_tried=learner.most_replicas_tried,
                   samples_per_s=samples_per_s, grad_sqr=grad_sqr, grad_var=grad_var)

    @property
    def noise_scale(self) -> float | None:
        if not self.grad_sqr or self.grad_var is None:
            return None
        return self.grad_var / self.grad_sqr


class JobModels:
    """Measurements and fitted models of every job, in the scheduler's state file."""

    def __init__(self, path: str | os.PathLike[str], prior: ThroughputParams = DEFAULT_PRIOR):
        self._connect = SqliteFile(path, SCHEMA, "costsched scheduler state file").transaction
        self.prior = prior

    def record(self, job_id: str, m: Measurement, *, now: float,
               share_key: str | None = None) -> None:
        """Keep ``m`` as its configuration's mean; refit as the shared learner says
        (:meth:`~costsched.goodput.online.OnlineThroughput.record`). A step no model can
        use (say, zero seconds) is logged and left out; the rest of ``m`` is kept. With a
        ``share_key`` (:func:`share_key`) the step is also pooled for jobs of that key."""
        point = throughput_point(m)
        with self._connect() as db:
            learner = self._learner(db, job_id)
            if point is not None:
                row = (m.num_workers, m.num_nodes, point.local_bsz, m.accum_steps,
                       point.step_time_s, point.sync_time_s, now)
                db.execute("INSERT OR REPLACE INTO measurements VALUES (?,?,?,?,?,?,?,?)",
                           (job_id, *row))
                if share_key is not None:
                    db.execute("INSERT OR REPLACE INTO shared_measurements VALUES"
                               " (?,?,?,?,?,?,?,?)", (share_key, *row))
            db.execute("INSERT OR IGNORE INTO job_models (job_id, at) VALUES (?, ?)",
                       (job_id, now))
            db.execute("UPDATE job_models SET samples_per_s=COALESCE(?, samples_per_s),"
                       " grad_sqr=COALESCE(?, grad_sqr), grad_var=COALESCE(?, grad_var), at=?"
                       " WHERE job_id=?", (m.samples_per_s, m.grad_sqr, m.grad_var, now, job_id))
            if m.epoch is not None and m.global_step is not None:
                _record_curve(db, job_id, m, now)
        if point is not None and learner.record(point):  # a fit takes a while: no lock held
            with self._connect() as db:
                _save_fit(db, job_id, learner, now)

    def learner(self, job_id: str) -> OnlineThroughput:
        """The job's learner as the file holds it: its measured points and last fit."""
        with self._connect() as db:
            return self._learner(db, job_id)

    def _learner(self, db, job_id: str) -> OnlineThroughput:
        row = db.execute("SELECT params, num_points FROM job_models WHERE job_id=?",
                         (job_id,)).fetchone()
        fitted = row is not None and row["params"] is not None
        own = {config_key(p): p for p in _points(db, job_id)}
        adopted = _rows_to_points(db.execute(
            "SELECT * FROM adopted_measurements WHERE job_id=?", (job_id,)).fetchall())
        return OnlineThroughput.restore(
            [p for p in adopted if config_key(p) not in own] + list(own.values()),
            ThroughputParams(**json.loads(row["params"])) if fitted else None,
            num_points_fitted=row["num_points"] if fitted else 0, prior=self.prior)

    def points(self, job_id: str) -> list[ThroughputPoint]:
        """The job's own measured steps (not those it adopted from a pool)."""
        with self._connect() as db:
            return _points(db, job_id)

    def curve(self, job_id: str) -> list[CurvePoint]:
        """The job's training curve, one point per epoch count reported, by epoch."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM job_curve WHERE job_id=? ORDER BY epoch",
                              (job_id,)).fetchall()
        return [CurvePoint(epoch=r["epoch"], global_step=r["global_step"], metric=r["metric"],
                           grad_sqr=r["grad_sqr"], grad_var=r["grad_var"],
                           global_batch_size=r["global_batch_size"]) for r in rows]

    def pooled(self, share_key: str) -> list[ThroughputPoint]:
        """The steps pooled under ``share_key`` (:func:`share_key`), one per configuration."""
        with self._connect() as db:
            return _rows_to_points(db.execute(
                "SELECT * FROM shared_measurements WHERE share_key=? ORDER BY num_workers,"
                " num_nodes, local_bsz, accum_steps", (share_key,)).fetchall())

    def adopt(self, job_id: str, share_key: str | None, *, now: float) -> bool:
        """A job with no fitted model yet starts from the steps pooled under ``share_key``
        (:meth:`~costsched.goodput.online.OnlineThroughput.adopt`): they are kept as its
        adopted points (its own measurements replace them, :meth:`points` leaves them
        out), and it is fitted to them. Returns whether it adopted any (never without a
        key)."""
        if share_key is None:
            return False
        with self._connect() as db:
            row = db.execute("SELECT params FROM job_models WHERE job_id=?",
                             (job_id,)).fetchone()
            if row is not None and row["params"] is not None:
                return False
            rows = db.execute("SELECT * FROM shared_measurements WHERE share_key=?",
                              (share_key,)).fetchall()
            learner = self._learner(db, job_id)
        if not learner.adopt(_rows_to_points(rows)):
            return False
        with self._connect() as db:
            db.executemany("INSERT OR IGNORE INTO adopted_measurements VALUES"
                           " (?,?,?,?,?,?,?,?)",
                           [(job_id, r["num_workers"], r["num_nodes"], r["local_bsz"],
                             r["accum_steps"], r["step_time_s"], r["sync_time_s"], r["at"])
                            for r in rows])
            db.execute("INSERT OR IGNORE INTO job_models (job_id, at) VALUES (?, ?)",
                       (job_id, now))
            _save_fit(db, job_id, learner, now, unless_fitted=True)
        return True

    def model(self, job_id: str) -> JobModel | None:
        """The job's fitted model, or None before its first measurement."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM job_models WHERE job_id=?", (job_id,)).fetchone()
            if row is None or row["params"] is None:
                return None
            learner = self._learner(db, job_id)
        return JobModel.of(learner, samples_per_s=row["samples_per_s"],
                           grad_sqr=row["grad_sqr"], grad_var=row["grad_var"])


def _save_fit(db, job_id: str, learner: OnlineThroughput, now: float, *,
              unless_fitted: bool = False) -> None:
    """Store ``learner``'s fit as the job's (``unless_fitted``: only if it has none yet,
    as a fit from the job's own steps may have landed meanwhile)."""
    db.execute("UPDATE job_models SET params=?, num_points=?, at=? WHERE job_id=?"
               + (" AND params IS NULL" if unless_fitted else ""),
               (json.dumps(asdict(learner.params)), learner.num_points_fitted, now, job_id))


def throughput_point(m: Measurement) -> ThroughputPoint | None:
    """``m``'s step as the learner takes it (sync at most the step); None if invalid."""
    try:
        return ThroughputPoint(num_nodes=m.num_nodes, num_replicas=m.num_workers,
                               local_bsz=float(m.local_bsz), accum_steps=m.accum_steps,
                               step_time_s=m.step_time_s,
                               sync_time_s=min(m.sync_time_s, m.step_time_s))
    except ConfigError as err:
        log.warning("measured step left out of the job's model: %s", err)
        return None


def share_key(config, gpu_model: str | None) -> str | None:
    """The pool of steps measured on ``gpu_model`` by jobs of ``config``'s
    ``training.measurements_key`` (steps differ by GPU model); None when the job sets no
    key or the model is not one known model."""
    key = config.training.measurements_key
    return None if key is None or not gpu_model else f"{key}@{gpu_model}"


def placed_gpu_model(placement: Mapping[str, int], gpu_models: Mapping[str, str]) -> str | None:
    """The one GPU model of the nodes in ``placement`` (node id -> model in
    ``gpu_models``); None for none, several or an unknown node."""
    found = {gpu_models.get(node_id) for node_id, count in placement.items() if count > 0}
    return found.pop() if len(found) == 1 else None


def declared_gpu_model(config, catalog) -> str:
    """The GPU model of the job's ``cost.instance_type``: where a job not yet placed is
    taken to run, for the pool it starts from."""
    return catalog.instance(config.cost.instance_type).gpu_model


def _points(db, job_id: str) -> list[ThroughputPoint]:
    rows = db.execute("SELECT * FROM measurements WHERE job_id=? ORDER BY num_workers,"
                      " local_bsz, accum_steps", (job_id,)).fetchall()
    return _rows_to_points(rows)


def _rows_to_points(rows) -> list[ThroughputPoint]:
    return [ThroughputPoint(num_nodes=r["num_nodes"], num_replicas=r["num_workers"],
                            local_bsz=r["local_bsz"], accum_steps=r["accum_steps"],
                            step_time_s=r["step_time_s"], sync_time_s=r["sync_time_s"])
            for r in rows]


def _record_curve(db, job_id: str, m: Measurement, now: float) -> None:
    """Keep the epoch's earliest report (closest to the epoch's end): a later one with
    the same epoch count is part-way into the next epoch. Its metric fills a gap only."""
    db.execute(
        "INSERT INTO job_curve VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (job_id, epoch) DO UPDATE"
        " SET global_step=excluded.global_step, metric=COALESCE(excluded.metric, metric),"
        " grad_sqr=COALESCE(excluded.grad_sqr, grad_sqr),"
        " grad_var=COALESCE(excluded.grad_var, grad_var),"
        " global_batch_size=excluded.global_batch_size, at=excluded.at"
        " WHERE excluded.global_step < global_step"
        " OR (excluded.global_step = global_step AND metric IS NULL)",
        (job_id, m.epoch, m.global_step, m.metric, m.grad_sqr, m.grad_var,
         m.global_batch_size or round(m.num_workers * m.local_bsz * m.accum_steps), now))


class FixedBatchThroughput:
    """A fitted job whose global batch ``G`` is fixed, as the policy sees it.

    On ``k`` GPUs each runs ``G / k`` examples a step (in micro-batches of at most
    ``max_local_bsz``). The policy scores ``gain(local * k) / step_time``; with the
    notional per-GPU batch ``G`` and a flat efficiency, gain is ``k``, so the step time
    it is given is ``k x T(k, G / k)``: the goodput it computes is then proportional to
    the job's real steps per second, ``1 / T(k, G / k)``.
    """

    def __init__(self, params: ThroughputParams, global_batch_size: int, max_local_bsz: int):
        self.params, self.global_batch_size = params, global_batch_size
        self.max_local_bsz = max(1, max_local_bsz)

    def local_bsz_choices(self) -> np.ndarray:
        return np.array([self.global_batch_size])

    def real_step_time_s(self, num_nodes: int, num_gpus: int) -> float:
        """Seconds per step of the whole global batch on ``num_gpus`` GPUs."""
        local = self.global_batch_size / num_gpus
        accum = max(1, math.ceil(local / self.max_local_bsz - 1e-9))
        return predict_step_time_s(self.params, num_nodes, num_gpus, local / accum, accum)

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        nodes = [n for n in placement if n > 0]
        gpus = max(sum(nodes), 1)
        return gpus * self.real_step_time_s(max(len(nodes), 1), gpus)

    def speedup(self, num_gpus: int, base_gpus: int = 1) -> float:
        """Steps per second on ``num_gpus`` GPUs over those on ``base_gpus`` (one node)."""
        return self.real_step_time_s(1, base_gpus) / self.real_step_time_s(1, num_gpus)


def status_figures(model: JobModel | None, throughput: FixedBatchThroughput | None, *,
                   gpus: int, gpus_per_worker: int, min_gpus: int, max_gpus: int,
                   usd_per_hour: float) -> dict[str, float | None]:
    """A running job's measured figures for ``costsched status``: samples/s, the fitted
    speedup with one worker fewer and one more (steps/s there over steps/s now), the
    noise scale, the efficiency of its fixed batch (1) and useful samples per dollar:

        samples_per_usd = samples_per_s x efficiency / usd_per_hour x 3600
    """
    if model is None or throughput is None or gpus < 1:
        return {}
    now_s = throughput.real_step_time_s(1, gpus)
    fewer, more = gpus - gpus_per_worker, gpus + gpus_per_worker
    figures: dict[str, float | None] = {
        "samples_per_s": model.samples_per_s, "noise_scale": model.noise_scale,
        "efficiency": 1.0,
        "speedup_down": now_s / throughput.real_step_time_s(1, fewer) if fewer >= min_gpus
        else None,
        "speedup_up": now_s / throughput.real_step_time_s(1, more) if more <= max_gpus
        else None,
    }
    if model.samples_per_s and usd_per_hour > 0:
        figures["samples_per_usd"] = model.samples_per_s / usd_over(usd_per_hour, 1.0)
    return figures
