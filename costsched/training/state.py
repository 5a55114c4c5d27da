"""Checkpoint state: everything needed to resume a run exactly where it stopped."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


@dataclass(kw_only=True)
class Progress:
    """Where training is, and what it has cost so far."""

    epoch: int = 0
    """Epoch in progress (0-based)."""
    batch_in_epoch: int = 0
    """Next batch of that epoch to train on."""
    global_step: int = 0
    """Optimiser steps taken over the whole run."""
    usd_at_checkpoint: float = 0.0
    """Cumulative dollars when this state was saved."""
    wall_time: float = 0.0
    """Unix time when this state was saved (or the run started)."""
    usd_to_target: float | None = None
    """Dollars spent when the target was first reached."""
    history: list[dict[str, float]] = field(default_factory=list)
    """Per-epoch metrics so far."""


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(
    directory: str | os.PathLike[str], *, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
    progress: Progress, extra_rng: dict[str, Any] | None = None,
) -> Path:
    """Write one ``state.pt`` into ``directory`` (atomically: temp file then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state() | (extra_rng or {}),
        "progress": asdict(progress),
    }
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(directory / STATE_FILE)
    return directory / STATE_FILE


def load_state(
    directory: str | os.PathLike[str], *, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any,
) -> tuple[Progress, dict[str, Any]]:
    """Restore model, optimiser, scheduler, scaler and RNG; return progress and the RNG dict."""
    payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload["scaler"] is not None:
        scaler.load_state_dict(payload["scaler"])
    set_rng_state(payload["rng"])
    return Progress(**payload["progress"]), payload["rng"]


def checkpoint_step(directory: str | os.PathLike[str]) -> int:
    """Global step saved in a checkpoint folder; -1 if it holds no readable state."""
    try:
        payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    except Exception:  # missing, or cut short by a crash mid-copy
        return -1
    return int(payload["progress"]["global_step"])


def newest_checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint folder under ``run_dir`` with the highest readable global step."""
    best, best_step = None, -1
    for directory in Path(run_dir).glob("checkpoint_*"):
        step = checkpoint_step(directory) if directory.is_dir() else -1
        if step > best_step:
            best, best_step = directory, step
    return best
