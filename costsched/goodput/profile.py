"""A job's measured steps to and from the simulator's ``placements.csv`` (Pollux artifact format).

Columns ``placement,local_bsz,step_time,sync_time``: ``placement`` one digit per
node (GPUs there), ``local_bsz`` the micro-batch per GPU, ``step_time`` seconds
of a step without accumulation, ``sync_time`` seconds of it in the all-reduce.
A point measured with ``a`` micro-batches is written as its last micro-batch,

    step_time = T_compute + T_sync = (T_step + (a - 1) * T_sync) / a,

which the simulator turns back into ``step_time + (a - 1) * (step_time - sync_time)``.

:func:`export_profile` writes a live job's whole profile (``placements.csv``,
``scalability.csv``, ``validation-B0.csv``, ``app.json``) from what the scheduler
recorded (:class:`~costsched.scheduler.job_models.JobModels`), for ``costsched
simulate`` to replay the job under other policies.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from costsched.errors import ConfigError
from costsched.goodput.throughput import ThroughputPoint
from costsched.policy.snapshot import statistical_gain
from costsched.sim.profiles import APP_EPOCHS, APP_SPEC_FILE, canonical_placement

if TYPE_CHECKING:
    from costsched.scheduler.job_models import CurvePoint, JobModels

PLACEMENT_COLUMNS = ("placement", "local_bsz", "step_time", "sync_time")
"""The columns of a profile's ``placements.csv``, in order."""


def _shape(point: ThroughputPoint) -> tuple[int, ...]:
    """The point's placement, or its replicas spread as evenly as possible over its nodes."""
    if point.placement:
        return point.placement
    base, extra = divmod(point.num_replicas, point.num_nodes)
    return tuple(base + (i < extra) for i in range(point.num_nodes))


def placement_key(point: ThroughputPoint) -> str:
    """The ``placement`` digit string of a point, canonical rotation (e.g. ``"13"``)."""
    shape = canonical_placement(_shape(point))
    if max(shape) > 9:
        raise ConfigError(f"placements.csv holds at most 9 GPUs per node, got {shape}")
    return "".join(map(str, shape))


def placements_frame(points: Sequence[ThroughputPoint]) -> pd.DataFrame:
    """One row per (placement, local_bsz): the mean of its points, as micro-batch times."""
    rows = [(placement_key(p), p.local_bsz, p.optim_time_s, p.sync_time_s) for p in points]
    frame = pd.DataFrame(rows, columns=list(PLACEMENT_COLUMNS))
    frame = frame.groupby(["placement", "local_bsz"], as_index=False, sort=True).mean()
    if (frame.local_bsz % 1 == 0).all():
        frame["local_bsz"] = frame.local_bsz.astype(int)
    return frame[list(PLACEMENT_COLUMNS)]


def write_placements(points: Sequence[ThroughputPoint], path: str | os.PathLike[str]) -> None:
    """Write ``points`` as a ``placements.csv`` the simulator's profile loader reads."""
    if not points:
        raise ConfigError("no measured points to write")
    placements_frame(points).to_csv(path, index=False)


def read_placements(source: str | os.PathLike[str] | pd.DataFrame) -> list[ThroughputPoint]:
    """Points from a ``placements.csv`` (path or frame), one per row, no accumulation."""
    frame = source if isinstance(source, pd.DataFrame) else pd.read_csv(source)
    missing = set(PLACEMENT_COLUMNS) - set(frame.columns)
    if missing:
        raise ConfigError(f"placements.csv lacks columns {sorted(missing)}")
    points = []
    for row in frame.itertuples(index=False):
        shape = tuple(int(c) for c in str(row.placement))
        points.append(ThroughputPoint(
            num_nodes=len(shape), num_replicas=sum(shape), placement=shape,
            local_bsz=float(row.local_bsz), step_time_s=float(row.step_time),
            sync_time_s=float(row.sync_time)))
    return points


# -- a live job's whole profile -------------------------------------------------------
SCALABILITY_COLUMNS = ("num_nodes", "num_replicas", "local_bsz", "step_time", "sync_time")
"""The columns of a profile's ``scalability.csv``, in order."""
VALIDATION_COLUMNS = ("progress", "iteration", "metric", "grad_sqr", "grad_var")
"""The columns of a profile's ``validation-B.csv``, in order."""
APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MIN_GRAD_SQR = 1e-12
"""Floor of a written |G|^2: with a variance of 0 too, the gain would be 0 / 0."""


@dataclass(frozen=True, kw_only=True)
class ExportedProfile:
    """What :func:`export_profile` wrote."""

    folder: Path
    """The app folder (``PROFILES/APP``)."""
    files: tuple[Path, ...]
    """Every file written there."""
    init_batch_size: int
    """B0: the batch of ``validation-B0.csv``, the unit of its progress."""
    epochs: int
    """Epochs the app trains for (rows of the curve)."""
    measured_epochs: tuple[int, ...]
    """Epochs a report was recorded for; the curve's other rows are interpolated, or
    (past the last) continued at the run's mean steps per epoch."""
    noise_measured: bool
    """Whether the run measured gradient noise (else the curve says noise scale 0)."""
    max_local_bsz: int
    """The per-GPU batch cap written to ``app.json``."""
    num_placements: int
    """Rows of ``placements.csv``."""
    num_scale_points: int
    """Rows of ``scalability.csv``."""


def scalability_frame(points: Sequence[ThroughputPoint]) -> pd.DataFrame:
    """One row per (nodes, replicas, local_bsz): the mean of its points, as micro-batch times."""
    rows = [(p.num_nodes, p.num_replicas, p.local_bsz, p.optim_time_s, p.sync_time_s)
            for p in points]
    frame = pd.DataFrame(rows, columns=list(SCALABILITY_COLUMNS))
    frame = frame.groupby(list(SCALABILITY_COLUMNS[:3]), as_index=False, sort=True).mean()
    if (frame.local_bsz % 1 == 0).all():
        frame["local_bsz"] = frame.local_bsz.astype(int)
    return frame[list(SCALABILITY_COLUMNS)]


def validation_frame(curve: Sequence[CurvePoint], *, epochs: int,
                     init_batch_size: int) -> pd.DataFrame:
    """A ``validation-B0.csv`` of ``epochs`` rows from a run's recorded epochs.

    ``progress`` counts steps at B0: a stretch of ``n`` steps at batch B ends at a
    report with statistics (sqr, var) and adds ``n x gain(B / B0)`` (= n at B0), with
    gain (var' + sqr) / (var' / s + sqr), var' = var / B0 (the file's ``grad_var``: the
    variance of a B0-example gradient, as the Pollux files have it). Unrecorded epochs
    are linear between the recorded ones (from 0 at epoch 0), later ones continue at
    the run's mean per epoch; statistics are linear between recorded ones and held past
    them (none measured: sqr 1 and var 0, noise scale 0: a larger batch gains nothing);
    an unrecorded epoch's metric is empty.
    """
    rows = sorted((c for c in curve if c.epoch >= 1), key=lambda c: c.epoch)
    if not rows:
        raise ConfigError("no completed epoch recorded")
    known = np.array([c.epoch for c in rows], dtype=float)
    steps = np.maximum.accumulate(np.array([c.global_step for c in rows], dtype=float))
    grid = np.arange(1, epochs + 1, dtype=float)

    def stats(at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sqr = _held(at, [c.grad_sqr for c in rows], known, default=1.0)
        var = _held(at, [c.grad_var for c in rows], known, default=0.0)
        return np.maximum(sqr, _MIN_GRAD_SQR), var / init_batch_size

    sqr, var = stats(known)
    gains = np.array([statistical_gain(s, v, init_batch_size, c.global_batch_size)
                      for c, s, v in zip(rows, sqr, var, strict=True)])
    progress = np.cumsum(np.diff(steps, prepend=0.0) * gains)
    metrics = {c.epoch: c.metric for c in rows}
    sqr, var = stats(grid)
    return pd.DataFrame({
        "progress": _filled(grid, known, progress),
        "iteration": np.rint(_filled(grid, known, steps)).astype(int),
        "metric": [metrics.get(int(e)) for e in grid],
        "grad_sqr": sqr, "grad_var": var,
    }, columns=list(VALIDATION_COLUMNS))


def _filled(grid: np.ndarray, known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear through (0, 0) and the recorded epochs; past the last, its mean per epoch."""
    inside = np.interp(grid, np.concatenate(([0.0], known)), np.concatenate(([0.0], values)))
    per_epoch = values[-1] / known[-1]
    return np.where(grid > known[-1], values[-1] + (grid - known[-1]) * per_epoch, inside)


def _held(grid: np.ndarray, values: Sequence[float | None], known: np.ndarray, *,
          default: float) -> np.ndarray:
    """Linear between the epochs that have a value, held past them; ``default`` when none
    has one."""
    have = np.array([v is not None for v in values])
    if not have.any():
        return np.full(len(grid), default)
    return np.interp(grid, known[have], np.array([v for v in values if v is not None]))


def _check_export(job_id: str, points: Sequence[ThroughputPoint], curve: Sequence[CurvePoint],
                  *, app_name: str, epochs: int, max_local_bsz: int | None) -> None:
    """One-line errors for what cannot make a profile the simulator loads."""
    if not points:
        raise ConfigError(f"job {job_id} has no step measurements to export; it must run "
                          "with training.measure_steps first")
    if not any(c.epoch >= 1 for c in curve):
        raise ConfigError(f"job {job_id} has no completed epoch recorded; export it after "
                          "its first epoch")
    if not APP_NAME.fullmatch(app_name) or app_name in APP_EPOCHS:
        raise ConfigError(f"app name `{app_name}` must be letters, digits, '.', '_' or '-' "
                          f"and not a Pollux app ({', '.join(sorted(APP_EPOCHS))})")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    smallest = min(p.local_bsz for p in points)
    if max_local_bsz is not None and max_local_bsz < smallest:
        raise ConfigError(f"max_local_bsz {max_local_bsz} is below every per-GPU batch job "
                          f"{job_id} measured ({smallest:g} and up)")


def export_profile(job_models: JobModels, job_id: str, folder: str | os.PathLike[str], *,
                   app_name: str, epochs: int, init_batch_size: int | None = None,
                   max_local_bsz: int | None = None) -> ExportedProfile:
    """Write job ``job_id``'s measurements as the simulator app ``FOLDER/APP_NAME``.

    ``placements.csv``: the steps measured on one node (and any whose per-node split
    is known); ``scalability.csv``: those over several nodes, by node and replica count
    (the split of a live job's workers over its nodes is not recorded); both as
    :func:`placements_frame` folds accumulation. ``validation-B0.csv``: the curve
    (:func:`validation_frame`); B0 is ``init_batch_size`` (the job's configured global
    batch), else the first recorded epoch's. ``app.json``: ``epochs``, the per-GPU cap
    ``max_local_bsz`` (default: the largest micro-batch measured) and
    ``single_gpu_floor: false`` (see :class:`~costsched.sim.profiles.AppProfile`).
    Earlier ``validation-*.csv`` files in the folder are replaced.
    """
    points, curve = job_models.points(job_id), job_models.curve(job_id)
    _check_export(job_id, points, curve, app_name=app_name, epochs=epochs,
                  max_local_bsz=max_local_bsz)
    base = init_batch_size or next(c for c in curve if c.epoch >= 1).global_batch_size
    cap = max_local_bsz or math.ceil(max(p.local_bsz for p in points))
    exact = [p for p in points if p.num_nodes == 1 or p.placement]
    spread = [p for p in points if not (p.num_nodes == 1 or p.placement)]
    if not exact:  # placements.csv needs a row: assume the even split
        exact, spread = spread, []
    app = Path(folder) / app_name
    app.mkdir(parents=True, exist_ok=True)
    for old in app.glob("validation-*.csv"):
        old.unlink()
    files = (app / "placements.csv", app / "scalability.csv",
             app / f"validation-{base}.csv", app / APP_SPEC_FILE)
    placed = placements_frame(exact)
    placed.to_csv(files[0], index=False)
    scale = (scalability_frame(spread) if spread
             else pd.DataFrame(columns=list(SCALABILITY_COLUMNS)))
    scale.to_csv(files[1], index=False)
    validation_frame(curve, epochs=epochs, init_batch_size=base).to_csv(files[2], index=False)
    measured = tuple(c.epoch for c in curve if 1 <= c.epoch <= epochs)
    noise = any(c.grad_sqr is not None for c in curve)
    files[3].write_text(json.dumps({
        "epochs": epochs, "max_local_bsz": cap, "single_gpu_floor": False,
        "source": {"job_id": job_id, "init_batch_size": base, "measured_epochs": measured,
                   "noise_measured": noise}}, indent=2) + "\n")
    return ExportedProfile(folder=app, files=files, init_batch_size=base, epochs=epochs,
                           measured_epochs=measured, noise_measured=noise, max_local_bsz=cap,
                           num_placements=len(placed), num_scale_points=len(scale))
