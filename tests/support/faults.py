"""Fault injection for recovery drills: kill a training worker the way a crash would."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from costsched.training.state import checkpoint_step, newest_checkpoint_dir

WORKER_TITLE = "RayTrainWorker"


def train_worker_pids() -> list[int]:
    """PIDs of this machine's Ray Train worker processes (their title names the actor)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if WORKER_TITLE in cmdline and "ray::" in cmdline:
            pids.append(proc.pid)
    return sorted(pids)


def kill_train_worker(rank_hint: int = -1) -> int:
    """SIGKILL one Ray Train worker (the last by PID by default); return its PID."""
    pids = train_worker_pids()
    if not pids:
        raise RuntimeError("no Ray Train worker process found on this machine")
    pid = pids[rank_hint]
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_checkpoint(run_dir: str | Path, min_step: int, timeout_s: float) -> int:
    """Block until a checkpoint at ``min_step`` or later exists; return its step."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newest = newest_checkpoint_dir(run_dir) if Path(run_dir).is_dir() else None
        step = checkpoint_step(newest) if newest is not None else -1
        if step >= min_step:
            return step
        time.sleep(0.1)
    raise TimeoutError(f"no checkpoint at step >= {min_step} in {run_dir} after {timeout_s} s")
