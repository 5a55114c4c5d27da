"""Heterogeneous GPU types (Sia artifact): one measured profile per (app, GPU type).

A Sia profile folder ``APP/`` holds ``placements-TYPE.csv`` and ``scalability-TYPE.csv``
per GPU type (columns in any order, read by name) and one set of ``validation-B.csv``
curves shared by every type: the statistics of training do not depend on the GPU, only
the step time does. Each (app, type) becomes an ordinary
:class:`~costsched.sim.profiles.AppProfile` whose per-GPU batch cap is the largest
``local_bsz`` measured on that type (memory), except deepspeech2 on ``rtx``, capped at 57
as Sia's simulator does.

The Sia cluster (:data:`SIA_POOLS`) and its rules (:data:`SIA_RESTART_S`,
:data:`SIA_CALIBRATION`) come from the data README (SOSP '23, Table 3 setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from costsched.cost.prices import InstanceType, PriceCatalog
from costsched.errors import ConfigError
from costsched.sim.profiles import APP_EPOCHS, AppProfile, build_app, read_curves

SIA_DIR_ENV = "COSTSCHED_SIA_DIR"
DEFAULT_SIA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sia"
"""Beside a source checkout: ``../shared/data/sia``."""

TYPE_CAPS: dict[tuple[str, str], int] = {("deepspeech2", "rtx"): 57}
"""(app, GPU type) -> per-GPU batch cap below the largest measured (Sia's simulator)."""

SIA_RESTART_S: dict[str, float] = {
    "cifar10": 50.0, "deepspeech2": 25.0, "bert": 120.0, "yolov3": 80.0,
    "imagenet": 250.0, "ncf": 15.0,
}
"""Seconds of no progress per allocation change, per app, in Sia's simulator."""

SIA_CALIBRATION: dict[str, float] = {"cifar10": 1.8, "ncf": 1.5}
"""Factor on measured step (and sync) times, fitted by Sia's authors to their physical
runs; apps not named here: :data:`SIA_DEFAULT_CALIBRATION`."""
SIA_DEFAULT_CALIBRATION = 1.2


@dataclass(frozen=True, kw_only=True)
class NodePool:
    """Nodes of one GPU type in a heterogeneous cluster."""

    gpu_type: str
    """Profile suffix of the type (``aws``, ``rtx``, ``dgx-ext``)."""
    instance_name: str
    """Catalog row the nodes are priced by."""
    instance: InstanceType
    """That row: GPUs per node, price, GPU model."""
    num_nodes: int
    """Nodes of this type."""

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError(f"pool {self.gpu_type}: need at least one node")


SIA_CLUSTER: tuple[tuple[str, str, int], ...] = (
    ("aws", "g4dn.12xlarge", 6),
    ("rtx", "onprem-rtx2080ti-8x", 3),
    ("dgx-ext", "p4d.24xlarge", 2),
)
"""The paper's 64-GPU cluster: (GPU type, catalog row, nodes): 24 T4 + 24 RTX 2080 Ti
+ 16 A100."""


def sia_pools(catalog: PriceCatalog) -> tuple[NodePool, ...]:
    """:data:`SIA_CLUSTER` priced by ``catalog``."""
    return tuple(NodePool(gpu_type=t, instance_name=name, instance=catalog.instance(name),
                          num_nodes=n) for t, name, n in SIA_CLUSTER)


def sia_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``override``, else ``$COSTSCHED_SIA_DIR``, else ``../shared/data/sia``."""
    chosen = override or os.environ.get(SIA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else DEFAULT_SIA_DIR


def calibration(app: str) -> float:
    return SIA_CALIBRATION.get(app, SIA_DEFAULT_CALIBRATION)


def load_typed_app(folder: Path, gpu_type: str, *, factor: float = 1.0) -> AppProfile:
    """The profile of app ``folder`` on ``gpu_type``, its step and sync times x ``factor``."""
    name = folder.name
    if name not in APP_EPOCHS:
        raise ConfigError(f"unknown application folder {folder}; known: {sorted(APP_EPOCHS)}")
    tables = {}
    for kind in ("placements", "scalability"):
        path = folder / f"{kind}-{gpu_type}.csv"
        if not path.is_file():
            raise ConfigError(f"no {path.name} in {folder} (GPU type `{gpu_type}`)")
        frame = pd.read_csv(path)
        frame[["step_time", "sync_time"]] *= factor
        tables[kind] = frame
    return build_app(folder, placements=tables["placements"], scalability=tables["scalability"],
                     curves=read_curves(folder), epochs=APP_EPOCHS[name],
                     cap=TYPE_CAPS.get((name, gpu_type)), floor=True,
                     placements_name=f"placements-{gpu_type}.csv")


def load_typed_profiles(root: str | os.PathLike[str] | None, gpu_types: tuple[str, ...], *,
                        calibrate: bool = True) -> dict[str, dict[str, AppProfile]]:
    """GPU type -> app -> profile, for every app folder under ``ROOT/profiles`` (or
    ``ROOT``); ``calibrate``: apply :data:`SIA_CALIBRATION` to step times."""
    base = sia_dir(root)
    folder = base / "profiles" if (base / "profiles").is_dir() else base
    apps = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not apps:
        raise ConfigError(f"no Sia profiles at {folder}; pass --profiles DIR or set "
                          f"${SIA_DIR_ENV}")
    return {t: {p.name: load_typed_app(p, t, factor=calibration(p.name) if calibrate else 1.0)
                for p in apps}
            for t in gpu_types}
