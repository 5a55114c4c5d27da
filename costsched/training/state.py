"""Checkpoint state: everything needed to resume a run exactly where it stopped."""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from costsched.cost.accounting import ATTEMPT_KEY
from costsched.goodput.restart import PHASE_KEYS

STATE_FILE = "state.pt"
RUN_META_KEY = "costsched"
"""Key of the run's own record (cost, step, sequence) inside every ``state.pt``."""


@dataclass(kw_only=True)
class Progress:
    """Where the built-in loop is in training."""

    epoch: int = 0
    """Epoch in progress (0-based)."""
    batch_in_epoch: int = 0
    """Next batch of that epoch to train on."""
    global_step: int = 0
    """Optimiser steps taken over the whole run."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per-epoch metrics so far."""
    batch_size: int = 0
    """The global batch the progress was made at (0: unknown, an older checkpoint)."""


def rng_state() -> dict[str, Any]:
    """Every RNG's state, as plain lists and tensors (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: Any, scaler: Any, progress: Progress) -> dict[str, Any]:
    """Everything needed to resume the built-in loop exactly here, as tensors and plain
    containers (loadable with ``weights_only``)."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
        "progress": asdict(progress),
    }


def restore_training_state(state: dict[str, Any], *, model: torch.nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
                           batch_size: int = 0) -> Progress:
    """Load :func:`training_state`'s output back; returns the progress it saved.

    ``batch_size``: the global batch this attempt trains at. When it differs from the
    saved one (an adaptive job the scheduler gave a new batch), the position in the
    epoch is carried over in examples, and the schedule keeps the peak learning rates
    it was built with (scaled for the new batch) instead of the saved ones. The
    schedule itself counts optimiser steps.
    """
    base_lrs = list(scheduler.base_lrs)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    progress = Progress(**state["progress"])
    saved = progress.batch_size
    if batch_size and saved and saved != batch_size:
        progress.batch_in_epoch = progress.batch_in_epoch * saved // batch_size
        _rescale_schedule(optimizer, scheduler, base_lrs)
    return progress


def _rescale_schedule(optimizer: torch.optim.Optimizer, scheduler: Any,
                      base_lrs: list[float]) -> None:
    """Point ``scheduler`` and the optimizer's groups at ``base_lrs`` (peak learning rates),
    keeping the schedule's position."""
    old = list(scheduler.base_lrs)
    scheduler.base_lrs = list(base_lrs)
    for group, before, after in zip(optimizer.param_groups, old, base_lrs, strict=True):
        group["initial_lr"] = after
        group["lr"] = group["lr"] * after / before if before else after


def checkpoint_order(directory: str | os.PathLike[str]) -> tuple[int, int]:
    """(sequence, global step) of a checkpoint folder; (-1, -1) if it holds no readable
    state (missing, or cut short by a crash mid-copy)."""
    try:
        payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
        meta = payload.get(RUN_META_KEY) or {}
        return int(meta.get("sequence", 0)), int(meta.get("global_step", 0))
    except Exception:
        return -1, -1


def checkpoint_step(directory: str | os.PathLike[str]) -> int:
    """Global step saved in a checkpoint folder; -1 if it holds no readable state."""
    return checkpoint_order(directory)[1]


def newest_checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint folder under ``run_dir`` saved last (highest sequence)."""
    best, best_order = None, (-1, -1)
    for directory in Path(run_dir).glob("checkpoint_*"):
        order = checkpoint_order(directory) if directory.is_dir() else (-1, -1)
        if order > best_order:
            best, best_order = directory, order
    return best


STOP_FILE = "STOP_REQUESTED"
"""A file in a run's folder asking its workers to checkpoint and stop; it holds the
outcome the run should end with (e.g. PREEMPTED). Every rank sees the folder, as
for checkpoints, though only rank 0 reads it."""


def request_stop(run_dir: str | os.PathLike[str], outcome: str) -> None:
    """Ask the run in ``run_dir`` to checkpoint and end with ``outcome``."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{STOP_FILE}.tmp"
    tmp.write_text(outcome)
    tmp.replace(path / STOP_FILE)  # atomic: a reader never sees a half-written outcome


def read_stop_request(run_dir: str | os.PathLike[str]) -> str | None:
    """The outcome a pending stop request asks for, or None."""
    try:
        return (Path(run_dir) / STOP_FILE).read_text().strip() or "STOPPED"
    except FileNotFoundError:
        return None


def clear_stop_request(run_dir: str | os.PathLike[str]) -> None:
    """Withdraw a stop request (before the run starts again)."""
    (Path(run_dir) / STOP_FILE).unlink(missing_ok=True)


MEASUREMENT_KEYS = ("num_nodes", "local_bsz", "accum_steps", "step_time_s", "sync_time_s",
                    "samples_per_s", "grad_sqr", "grad_var")
"""A report's step measurements (see ``costsched.goodput.measure``), kept with progress."""
PROGRESS_FILE = "progress.json"
"""The run's latest report (step, total steps, step rate), rewritten at each report,
so a scheduler can show progress and an ETA without talking to the workers."""


def write_progress(run_dir: str | os.PathLike[str], metrics: dict[str, Any], *,
                   now: float) -> None:
    """Record a report's progress fields in ``run_dir`` (atomically)."""
    keys = ("global_step", "total_steps", "epoch", "resumed_from_step", "first_step_at",
            "cost_usd", "world_size", "val_accuracy", "global_batch_size", ATTEMPT_KEY,
            *MEASUREMENT_KEYS, *PHASE_KEYS.values())
    record = {k: metrics[k] for k in keys if k in metrics} | {"reported_at": now}
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{PROGRESS_FILE}.tmp"
    tmp.write_text(json.dumps(record))
    tmp.replace(path / PROGRESS_FILE)


def read_progress(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last progress record, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def eta_s(progress: dict[str, Any]) -> float | None:
    """Seconds to the last step at this attempt's step rate:
    eta = (total_steps - step) * (reported_at - first_step_at) / (step - resumed_from_step);
    None before the attempt has made progress."""
    try:
        step, total = int(progress["global_step"]), int(progress["total_steps"])
        first, at = float(progress["first_step_at"]), float(progress["reported_at"])
        since = max(int(progress.get("resumed_from_step", -1)), 0)
    except (KeyError, TypeError, ValueError):
        return None
    steps = step - since
    if first <= 0 or steps <= 0 or at <= first:
        return None
    return max(total - step, 0) * (at - first) / steps
