"""A job's measured steps to and from the simulator's ``placements.csv`` (Pollux artifact format).

Columns ``placement,local_bsz,step_time,sync_time``: ``placement`` one digit per
node (GPUs there), ``local_bsz`` the micro-batch per GPU, ``step_time`` seconds
of a step without accumulation, ``sync_time`` seconds of it in the all-reduce.
A point measured with ``a`` micro-batches is written as its last micro-batch,

    step_time = T_compute + T_sync = (T_step + (a - 1) * T_sync) / a,

which the simulator turns back into ``step_time + (a - 1) * (step_time - sync_time)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from costsched.errors import ConfigError
from costsched.goodput.throughput import ThroughputPoint
from costsched.sim.profiles import canonical_placement

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
