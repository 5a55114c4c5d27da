"""Job arrival workloads: the Pollux CSVs, or a seeded synthetic one for tests and benches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from costsched.errors import ConfigError

COLUMNS = ("name", "time", "application", "num_replicas", "batch_size")


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """One submitted job."""

    name: str
    """Unique name within the workload."""
    submit_time_s: float
    """Submission time, seconds from the start of the trace."""
    application: str
    """Profile the job trains (``cifar10``, ``bert``, ...)."""
    num_replicas: int
    """GPUs the user asked for."""
    batch_size: int
    """Total batch size the user asked for."""
    priority: int = 0
    """Higher runs first."""
    budget_usd: float = math.inf
    """Dollars the job may spend in all."""

    def __post_init__(self) -> None:
        if self.num_replicas < 1 or self.batch_size < 1 or self.submit_time_s < 0:
            raise ConfigError(f"job {self.name}: need num_replicas, batch_size >= 1, time >= 0")


def load_workload(path: str | Path) -> tuple[JobSpec, ...]:
    """Read a workload CSV (``name,time,application,num_replicas,batch_size``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no workload file at {path}")
    frame = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    if frame.name.duplicated().any():
        raise ConfigError(f"{path}: job names must be unique")
    return tuple(
        JobSpec(name=str(r.name), submit_time_s=float(r.time), application=str(r.application),
                num_replicas=int(r.num_replicas), batch_size=int(r.batch_size),
                priority=int(getattr(r, "priority", 0) or 0),
                budget_usd=_budget(getattr(r, "budget_usd", math.inf)))
        for r in frame.itertuples(index=False)
    )


def _budget(cell: object) -> float:
    """A ``budget_usd`` cell: dollars, or none (infinite) when blank."""
    value = float(cell)  # type: ignore[arg-type]
    return math.inf if math.isnan(value) else value


def workload_label(path: str | Path) -> str:
    """``load-1.0/workload-1`` for a Pollux workload path, else the file stem."""
    path = Path(path)
    parent = path.parent.name
    return f"{parent}/{path.stem}" if parent.startswith("load-") else path.stem


def synthetic_workload(
    *,
    num_jobs: int,
    seed: int,
    apps: Sequence[str],
    mean_interarrival_s: float = 180.0,
    max_replicas: int = 4,
    batch_sizes: dict[str, int] | None = None,
) -> tuple[JobSpec, ...]:
    """A seeded random workload: Poisson arrivals, uniform apps, 1..max_replicas GPUs."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(mean_interarrival_s, size=num_jobs))
    out = []
    for i, t in enumerate(times):
        app = apps[int(rng.integers(len(apps)))]
        replicas = int(rng.integers(1, max_replicas + 1))
        batch = (batch_sizes or {}).get(app, 128)
        out.append(JobSpec(name=f"{app}-{i}", submit_time_s=float(round(t)), application=app,
                           num_replicas=replicas, batch_size=batch))
    return tuple(out)
