"""Measured training profiles (Pollux artifact): step times, training curves, goodput.

One :class:`AppProfile` per application folder. Two things are read from it:

* step time for a placement and per-GPU batch size, interpolated where the
  placement or batch size was not measured (see :meth:`AppProfile.step_time_s`);
* statistical progress: the gradient statistics at a batch size and epoch, the
  gain of a batch size over the initial one, and the progress at which the job
  has trained its app's epochs (see :meth:`AppProfile.gain`).

Progress is in the unit of the curves' ``progress`` column: optimizer steps at
the app's initial batch size B0 (cifar10: 391 per epoch = 50,000 / 128). A step
at batch B advances progress by the Pollux gain

    gain(B) = (var + sqr) / (var / s + sqr),   s = B / B0,

with ``sqr``, ``var`` the curve's ``grad_sqr``, ``grad_var`` (noise scale
phi = var / sqr). Statistical efficiency is gain / s = (phi + 1) / (phi + s),
i.e. Pollux's E(M) = (phi_t + M0) / (phi_t + M) with phi_t = B0 * phi.

A folder with an ``app.json`` (``epochs``, optional ``max_local_bsz`` and
``single_gpu_floor``) is an app of any name; without one, the folder must be one of
the Pollux apps, whose epochs and per-GPU cap are fixed below.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from costsched.config.strict import closest_hint
from costsched.errors import ConfigError
from costsched.policy.snapshot import statistical_gain

# Epochs each app trains for, and its per-GPU batch cap, from the data README.
APP_EPOCHS: dict[str, int] = {
    "bert": 2, "cifar10": 100, "ncf": 10, "imagenet": 90, "deepspeech2": 80, "yolov3": 50,
}
APP_MAX_LOCAL_BSZ: dict[str, int] = {"yolov3": 8}
APP_SPEC_FILE = "app.json"
"""An app folder's own epochs and per-GPU cap (any folder name; see :func:`load_app`)."""
APP_SPEC_KEYS = ("epochs", "max_local_bsz", "single_gpu_floor", "source")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLLUX_DIR = REPO_ROOT.parent / "shared" / "data" / "pollux"
"""Beside a source checkout: ``../shared/data/pollux``."""
POLLUX_DIR_ENV = "COSTSCHED_POLLUX_DIR"


def pollux_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """The Pollux data folder: ``override``, else ``$COSTSCHED_POLLUX_DIR``, else the first
    of ``../shared/data/pollux`` beside the source checkout, ``shared/data/pollux`` or
    ``../shared/data/pollux`` from the current folder that exists (else the first)."""
    chosen = override or os.environ.get(POLLUX_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    candidates = [DEFAULT_POLLUX_DIR, Path.cwd() / "shared" / "data" / "pollux",
                  Path.cwd().parent / "shared" / "data" / "pollux"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def canonical_placement(placement: tuple[int, ...]) -> tuple[int, ...]:
    """Drop empty nodes and rotate to the smallest rotation, as the artifact keys them."""
    nodes = tuple(n for n in placement if n > 0)
    if not nodes:
        return ()
    # The smallest rotation starts at a smallest node; a policy's packed shapes are mostly
    # full nodes, whose rotations are all the same.
    least = min(nodes)
    starts = [i for i, n in enumerate(nodes) if n == least]
    if len(starts) == len(nodes):
        return nodes
    return min(nodes[i:] + nodes[:i] for i in starts)


@dataclass(frozen=True, kw_only=True)
class _Curve:
    """Step and sync time against per-GPU batch size, for one placement or group."""

    local_bsz: np.ndarray
    """Measured per-GPU batch sizes, ascending."""
    step_time_s: np.ndarray
    """Seconds per optimizer step at each batch size."""
    sync_time_s: np.ndarray
    """Seconds of that step spent synchronising gradients."""

    def at(self, local_bsz: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.interp(local_bsz, self.local_bsz, self.step_time_s),
                np.interp(local_bsz, self.local_bsz, self.sync_time_s))


def _curves(frame: pd.DataFrame, keys: list[str]) -> dict[tuple, _Curve]:
    grouped = frame.groupby([*keys, "local_bsz"], as_index=False)[["step_time", "sync_time"]]
    means = grouped.mean().sort_values([*keys, "local_bsz"])
    out: dict[tuple, _Curve] = {}
    for key, rows in means.groupby(keys):
        out[tuple(int(k) for k in key)] = _Curve(
            local_bsz=rows.local_bsz.to_numpy(float),
            step_time_s=rows.step_time.to_numpy(float),
            sync_time_s=rows.sync_time.to_numpy(float),
        )
    return out


def _interp_clamped(x: float, xs: list[int], ys: list[np.ndarray]) -> np.ndarray:
    """Piecewise-linear in ``x`` through (xs, ys), held constant past both ends.

    Held, not extended: the measurements are noisy, and extending the last
    segment of a noisy curve can make a larger job look faster than a smaller one.
    """
    stacked = np.asarray(ys, dtype=float)
    return np.array([np.interp(x, xs, stacked[:, k]) for k in range(stacked.shape[1])])


@dataclass(frozen=True, kw_only=True)
class AppProfile:
    """The measurements of one application, with interpolation over them."""

    name: str
    """Application name (folder name), e.g. ``cifar10``."""
    max_epochs: int
    """Epochs the job trains for; it is complete after these."""
    max_local_bsz: int
    """Largest per-GPU batch size (largest measured, or the app's cap)."""
    min_local_bsz: int
    """Smallest measured per-GPU batch size."""
    local_bsz_choices: np.ndarray
    """Measured per-GPU batch sizes within the cap: the candidates a policy picks from."""
    curves: dict[int, pd.DataFrame]
    """Total batch size -> its training curve (one row per epoch)."""
    exact: dict[tuple[int, ...], _Curve]
    """Canonical placement -> measured step-time curve."""
    groups: dict[tuple[int, int], _Curve]
    """(num_nodes, num_replicas) -> step-time curve averaged over placements, plus scale points."""
    single_gpu_floor: bool = True
    """No interpolated step is faster than one GPU's at the same per-GPU batch. Right for
    the Pollux profiles, which measure one GPU over every batch size; not for a live
    job's, which measured one GPU at its whole batch only (held there, it would make
    every unmeasured size as slow as one GPU)."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    """Memo of step times: the simulator asks the same few placements many times."""
    _accum_cache: dict = field(default_factory=dict, repr=False, compare=False)
    """:meth:`accumulated_step` by the placement as given (a policy asks the same few
    shapes for thousands of jobs; canonicalising each time cost more than the lookup)."""
    step_tables: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    """A policy's step-time tables for this profile (:mod:`costsched.policy.goodput`): a
    profile holds them, so they go when it does."""
    _columns: dict = field(default_factory=dict, repr=False, compare=False)
    """Values derived from the measurements, kept: curve columns by (batch size, column)
    (the simulator reads the noise statistics of every running job every round, and a
    DataFrame lookup cost more than the interpolation); the curves' epoch axes
    (``("epoch_axis", size)``), batch sizes (``"sizes"``) and progress axes
    (``"epoch_at"``); the one-GPU floor (``("floor", local batch)``); the step-time
    groups' node counts (``"levels"``), replica axes and interpolations by replicas."""

    @property
    def init_batch_size(self) -> int:
        return min(self.curves)

    @property
    def max_batch_size(self) -> int:
        return max(self.curves)

    @property
    def target_progress(self) -> float:
        """Progress at the end of the app's last epoch on the initial-batch curve."""
        return float(self.curve_column(self.init_batch_size, "progress")[self.max_epochs - 1])

    def curve_column(self, batch_size: int, column: str) -> np.ndarray:
        """Column ``column`` of the training curve at ``batch_size``, one value per epoch
        (read-only)."""
        key = (batch_size, column)
        values = self._columns.get(key)
        if values is None:
            values = self._columns[key] = self.curves[batch_size][column].to_numpy(float)
            values.setflags(write=False)
        return values

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> tuple[float, float]:
        """(step, sync) seconds for ``placement`` (GPUs per node) at per-GPU ``local_bsz``.

        A measured placement (any rotation) interpolates linearly in batch size.
        Otherwise: linear in replicas between the measured replica counts at the
        bracketing node counts, then linear in node count between them (node
        counts past 16, the largest measured, are treated as 16 as the artifact
        does; replica counts past a node count's measured range take its end value).
        """
        key = (canonical_placement(placement), float(local_bsz))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._step_time_uncached(key[0], key[1])
            self._cache[key] = hit
        return hit

    def _step_time_uncached(self, placement: tuple[int, ...], bsz: float) -> tuple[float, float]:
        if not placement:
            raise ValueError("empty placement has no step time")
        curve = self.exact.get(placement)
        if curve is None:
            curve = self.exact.get(tuple(sorted(placement)))
        if curve is not None:
            step, sync = curve.at(bsz)
            return float(step), float(sync)
        step, sync = self._group_interp(len(placement), sum(placement), bsz)
        if self.single_gpu_floor and (1,) in self.exact:
            # Extrapolation may undershoot; a step is never faster than one GPU's compute.
            floor = self._columns.get(("floor", bsz))
            if floor is None:
                floor = self._columns[("floor", bsz)] = float(self.exact[(1,)].at(bsz)[0])
            step = max(float(step), floor)
        step = float(step)
        return step, float(min(max(sync, 0.0), step))

    def _group_interp(self, num_nodes: int, num_replicas: int, bsz: float) -> np.ndarray:
        levels = self._levels()
        n_eff = min(max(num_nodes, levels[0]), levels[-1])
        lo = max(n for n in levels if n <= n_eff)
        hi = min(n for n in levels if n >= n_eff)
        per_level = []
        for level in dict.fromkeys((lo, hi)):
            reps, columns = self._level_at(level, bsz)
            # _interp_clamped over (step, sync), kept by the replica count held to the
            # measured ones (past them: their end values, as np.interp itself holds them)
            count = min(max(num_replicas, reps[0]), reps[-1])
            at = self._columns.get(("replicas", level, count, bsz))
            if at is None:
                at = np.array([np.interp(count, reps, c) for c in columns])
                self._columns[("replicas", level, count, bsz)] = at
            per_level.append(at)
        if lo == hi:
            return per_level[0]
        return _interp_clamped(n_eff, [lo, hi], per_level)

    def _levels(self) -> list[int]:
        """Node counts with measured groups, ascending."""
        levels = self._columns.get("levels")
        if levels is None:
            levels = self._columns["levels"] = sorted({n for n, _ in self.groups})
        return levels

    def _level_at(self, level: int, bsz: float) -> tuple[np.ndarray, np.ndarray]:
        """(replica counts measured on ``level`` nodes, their step times and their sync
        times at ``bsz``, one row each): the same for every replica count interpolated
        between them, so kept."""
        key = ("level", level, bsz)
        hit = self._columns.get(key)
        if hit is None:
            reps = sorted(r for n, r in self.groups if n == level)
            values = [np.array(self.groups[(level, r)].at(bsz)) for r in reps]
            hit = self._columns[key] = (np.asarray(reps, dtype=float),
                                        np.ascontiguousarray(np.asarray(values, dtype=float).T))
        return hit

    def accumulated_step(self, placement: tuple[int, ...],
                         local_bsz: float) -> tuple[int, float, float]:
        """``(a, T, sync)`` of one optimizer step at per-GPU ``local_bsz``, as the simulator
        runs it: a batch above :attr:`max_local_bsz` runs as ``a = ceil(l / max_local_bsz)``
        micro-batches of ``l / a``, and only the last synchronises:

            T = step(l / a) + (a - 1) * (step(l / a) - sync(l / a)).
        """
        key = (placement, local_bsz)
        hit = self._accum_cache.get(key)
        if hit is None:
            accum = max(1, math.ceil(local_bsz / self.max_local_bsz - 1e-9))
            step, sync = self.step_time_s(placement, local_bsz / accum)
            hit = self._accum_cache[key] = (accum, step + (accum - 1) * (step - sync), sync)
        return hit

    def accumulated_step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        """Seconds per optimizer step at per-GPU ``local_bsz`` (:meth:`accumulated_step`)."""
        return self.accumulated_step(placement, local_bsz)[1]

    def epoch_at(self, progress: float) -> float:
        """Fractional epoch reached at ``progress`` on the initial-batch curve."""
        axes = self._columns.get("epoch_at")
        if axes is None:
            prog = self.curve_column(self.init_batch_size, "progress")
            axes = self._columns["epoch_at"] = (np.concatenate(([0.0], prog)),
                                                np.arange(len(prog) + 1))
        return float(np.interp(progress, *axes))

    def grad_stats(self, batch_size: float, epoch: float) -> tuple[float, float]:
        """(grad_sqr, grad_var) at ``batch_size`` and fractional ``epoch``.

        Linear in epoch within a curve; between measured batch sizes, linear in
        log2(batch size); clamped to the measured range.
        """
        sizes = self._columns.get("sizes")
        if sizes is None:
            sizes = self._columns["sizes"] = sorted(self.curves)
        b = min(max(batch_size, sizes[0]), sizes[-1])
        i = min(max(int(np.searchsorted(sizes, b)), 1), len(sizes) - 1) if len(sizes) > 1 else 0
        picks = [sizes[i - 1], sizes[i]] if len(sizes) > 1 else [sizes[0]] * 2
        stats = [self._stats_on_curve(size, epoch) for size in picks]
        if picks[0] == picks[1]:
            return stats[0]
        w = (math.log2(b) - math.log2(picks[0])) / (math.log2(picks[1]) - math.log2(picks[0]))
        return tuple(float(a + w * (c - a)) for a, c in zip(stats[0], stats[1], strict=True))

    def _stats_on_curve(self, size: int, epoch: float) -> tuple[float, float]:
        sqr, var = self.curve_column(size, "grad_sqr"), self.curve_column(size, "grad_var")
        # Row k holds the statistics measured during epoch k (0-based).
        xs = self._columns.get(("epoch_axis", size))
        if xs is None:
            xs = self._columns[("epoch_axis", size)] = np.arange(len(sqr), dtype=float)
        return float(np.interp(epoch, xs, sqr)), float(np.interp(epoch, xs, var))

    def gain(self, batch_size: float, epoch: float) -> float:
        """Progress per step at ``batch_size``: (var + sqr) / (var / s + sqr), s = B / B0."""
        sqr, var = self.grad_stats(batch_size, epoch)
        return statistical_gain(sqr, var, self.init_batch_size, batch_size)


def load_app(folder: Path) -> AppProfile:
    """Read one application folder (``placements.csv``, ``scalability.csv``, ``validation-*``).

    Its epochs and per-GPU batch cap come from its ``app.json`` when it has one (an
    exported live job: ``costsched profile export``), else from the Pollux app it is named
    after. ``scalability.csv`` may hold no rows; ``placements.csv`` needs at least one.
    """
    epochs, cap, floor = _app_spec(folder)
    try:
        placements = pd.read_csv(folder / "placements.csv")
        scalability = pd.read_csv(folder / "scalability.csv")
    except FileNotFoundError as exc:
        raise ConfigError(f"incomplete profile folder {folder}: {exc.filename} missing") from None
    return build_app(folder, placements=placements, scalability=scalability,
                     curves=read_curves(folder), epochs=epochs, cap=cap, floor=floor,
                     placements_name="placements.csv")


def read_curves(folder: Path) -> dict[int, pd.DataFrame]:
    """Total batch size -> training curve, from ``folder/validation-B.csv``."""
    return {int(p.stem.split("-")[-1]): pd.read_csv(p)
            for p in sorted(folder.glob("validation-*.csv"))}


def build_app(folder: Path, *, placements: pd.DataFrame, scalability: pd.DataFrame,
              curves: dict[int, pd.DataFrame], epochs: int, cap: int | None, floor: bool,
              placements_name: str) -> AppProfile:
    """An :class:`AppProfile` from its measurement tables (columns read by name); ``cap``
    None: the largest measured per-GPU batch."""
    name = folder.name
    if not curves:
        raise ConfigError(f"no validation-*.csv curves in {folder}")
    if placements.empty:
        raise ConfigError(f"{folder / placements_name} has no rows")
    if len(curves[min(curves)]) < epochs:
        raise ConfigError(f"{folder}: validation-{min(curves)}.csv has "
                          f"{len(curves[min(curves)])} epochs, fewer than the {epochs} to train")
    placements = placements.copy()
    placements["placement"] = placements.placement.astype(str)
    placements["num_nodes"] = placements.placement.str.len()
    placements["num_replicas"] = placements.placement.map(lambda p: sum(map(int, p)))
    exact = _exact_curves(placements)
    groups = _curves(pd.concat([placements.drop(columns="placement"), scalability]),
                     ["num_nodes", "num_replicas"])
    measured = np.sort(placements.local_bsz.unique()).astype(int)
    cap = cap or int(measured.max())
    if cap < measured.min():
        raise ConfigError(f"{folder}: max_local_bsz {cap} is below every measured per-GPU "
                          f"batch ({int(measured.min())} and up)")
    return AppProfile(
        name=name, max_epochs=epochs, max_local_bsz=cap,
        min_local_bsz=int(measured.min()), local_bsz_choices=measured[measured <= cap],
        curves=curves, exact=exact, groups=groups, single_gpu_floor=floor,
    )


def _app_spec(folder: Path) -> tuple[int, int | None, bool]:
    """(epochs, per-GPU cap or None for the largest measured, single-GPU floor) of an app."""
    path = folder / APP_SPEC_FILE
    if not path.is_file():
        if folder.name not in APP_EPOCHS:
            raise ConfigError(f"unknown application folder {folder}; known: "
                              f"{sorted(APP_EPOCHS)}, or any folder with an {APP_SPEC_FILE}")
        return APP_EPOCHS[folder.name], APP_MAX_LOCAL_BSZ.get(folder.name), True
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: want an object with `epochs`, got {type(spec).__name__}")
    for key in spec:
        if key not in APP_SPEC_KEYS:
            raise ConfigError(f"{path}: unknown key `{key}`{closest_hint(key, APP_SPEC_KEYS)}")
    epochs, cap = spec.get("epochs"), spec.get("max_local_bsz")
    floor = spec.get("single_gpu_floor", True)
    if not _is_count(epochs) or (cap is not None and not _is_count(cap)):
        raise ConfigError(f"{path}: `epochs` (and `max_local_bsz`, if given) must be "
                          f"whole numbers >= 1, got {epochs!r} and {cap!r}")
    if not isinstance(floor, bool):
        raise ConfigError(f"{path}: `single_gpu_floor` must be true or false, got {floor!r}")
    return epochs, cap, floor


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _exact_curves(placements: pd.DataFrame) -> dict[tuple[int, ...], _Curve]:
    out: dict[tuple[int, ...], _Curve] = {}
    for text, rows in placements.groupby("placement"):
        rows = rows.groupby("local_bsz", as_index=False)[["step_time", "sync_time"]].mean()
        out[canonical_placement(tuple(int(c) for c in text))] = _Curve(
            local_bsz=rows.local_bsz.to_numpy(float),
            step_time_s=rows.step_time.to_numpy(float),
            sync_time_s=rows.sync_time.to_numpy(float),
        )
    return out


def load_profiles(root: str | os.PathLike[str] | None = None) -> dict[str, AppProfile]:
    """All apps under ``ROOT/profiles``, or ``ROOT`` itself when it has no ``profiles``
    folder (``ROOT`` as :func:`pollux_dir` resolves it): the Pollux apps and every folder
    with an ``app.json``."""
    base = pollux_dir(root)
    folder = base / "profiles" if (base / "profiles").is_dir() else base
    if not folder.is_dir():
        raise ConfigError(
            f"no Pollux profiles at {folder}; pass --profiles DIR or set ${POLLUX_DIR_ENV}"
        )
    apps = {p.name: load_app(p) for p in sorted(folder.iterdir())
            if p.is_dir() and (p.name in APP_EPOCHS or (p / APP_SPEC_FILE).is_file())}
    if not apps:
        raise ConfigError(f"no application folders ({sorted(APP_EPOCHS)}, or any with an "
                          f"{APP_SPEC_FILE}) in {folder}")
    return apps
