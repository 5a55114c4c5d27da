"""Checkpoint state: everything needed to resume a run exactly where it stopped."""

from __future__ import annotations

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


CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_name(sequence: int) -> str:
    """The storage folder name of a run's ``sequence``-th checkpoint: names sort by
    sequence, so the newest is found from a listing or a name alone."""
    return f"{CHECKPOINT_PREFIX}{sequence:06d}"


def checkpoint_sequence(name: str | None) -> int:
    """The sequence a checkpoint folder name carries (see :func:`checkpoint_name`);
    -1 for None or a name without one."""
    tail = (name or "").rstrip("/").rsplit("/", 1)[-1]
    digits = tail.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if tail.startswith(CHECKPOINT_PREFIX) and digits.isdigit() else -1


MEASUREMENT_KEYS = ("num_nodes", "local_bsz", "accum_steps", "step_time_s", "sync_time_s",
                    "samples_per_s", "grad_sqr", "grad_var")
"""A report's step measurements (see ``costsched.goodput.measure``), kept with progress."""
PROGRESS_KEYS = ("global_step", "total_steps", "epoch", "resumed_from_step", "first_step_at",
                 "cost_usd", "world_size", "val_accuracy", "global_batch_size", ATTEMPT_KEY,
                 "stop_reason", "final", *MEASUREMENT_KEYS, *PHASE_KEYS.values())


def progress_record(metrics: dict[str, Any], *, now: float) -> dict[str, Any]:
    """A report's progress fields (step, total steps, step rate, measurements), so a
    scheduler can show progress and an ETA without talking to the workers."""
    return {k: metrics[k] for k in PROGRESS_KEYS if k in metrics} | {"reported_at": now}


def reported_total_steps(progress: dict[str, Any]) -> int | None:
    """The optimiser steps the run takes in all, as its progress says; None unless a
    positive count."""
    try:
        total = int(progress["total_steps"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return total if total > 0 else None


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
