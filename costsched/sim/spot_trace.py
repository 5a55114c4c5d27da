"""A spot-capacity trace: how many spot instances a zone grants, tick by tick.

The format of skypilot-org/spot-traces (``../shared/data/spot``):
``{"metadata": {"gap_seconds": G}, "data": [n0, n1, ...]}``, one count per tick of G
seconds. An availability trace counts the instances of a fixed request AWS would grant;
a preemption trace counts the instances still alive. Either replays as a spot pool: at
time t the pool may hold at most ``data[floor(t / G) mod len(data)]`` nodes (the trace
repeats from its start when a simulation outlasts it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from costsched.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SpotTrace:
    """Spot instances granted per tick."""

    path: str
    """Where it was read from (for messages)."""
    gap_s: float
    """Seconds per tick (the file's ``metadata.gap_seconds``)."""
    counts: tuple[int, ...]
    """Instances granted at each tick."""

    def __post_init__(self) -> None:
        if self.gap_s <= 0 or not self.counts or min(self.counts) < 0:
            raise ConfigError(f"spot trace {self.path}: need gap_seconds > 0 and a non-empty "
                              "`data` list of counts >= 0")

    def count_at(self, time_s: float) -> int:
        """Instances granted at ``time_s`` (the tick in force then)."""
        return self.counts[int(time_s // self.gap_s) % len(self.counts)]


def load_spot_trace(path: str | Path) -> SpotTrace:
    """Read a trace file; any defect is a one-line :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"spot trace {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spot trace {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"spot trace {path}: not JSON (line {exc.lineno}: {exc.msg})") from None
    meta = raw.get("metadata") if isinstance(raw, dict) else None
    gap = meta.get("gap_seconds") if isinstance(meta, dict) else None
    if isinstance(gap, bool) or not isinstance(gap, int | float):
        raise ConfigError(f"spot trace {path}: needs a number at metadata.gap_seconds")
    data = raw.get("data")
    if (not isinstance(data, list)
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in data)):
        raise ConfigError(f"spot trace {path}: `data` must be a list of whole counts")
    return SpotTrace(path=str(path), gap_s=float(gap), counts=tuple(data))
