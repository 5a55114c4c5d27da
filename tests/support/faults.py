"""Fault injection for recovery drills: kill a training worker the way a crash would."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from costsched.training.state import checkpoint_step, newest_checkpoint_dir

WORKER_TITLE = "RayTrainWorker"


def ray_session_name() -> str:
    """The session of the Ray cluster this process is connected to (``session_...``)."""
    import ray

    node = getattr(ray._private.worker.global_worker, "node", None) or \
        ray._private.worker._global_node
    if node is None:
        raise RuntimeError("not connected to a Ray cluster")
    return node.session_name


def train_worker_pids(session: str | None = None) -> list[int]:
    """PIDs of the Ray Train worker processes of the Ray cluster under test (their title
    names the actor; their raylet's command line names the session), never those of
    another Ray running on the same machine."""
    session = session or ray_session_name()
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if WORKER_TITLE not in cmdline or "ray::" not in cmdline:
            continue
        try:
            raylet = " ".join(proc.parent().cmdline())
        except (psutil.Error, AttributeError):
            continue
        if f"/{session}/" in raylet:
            pids.append(proc.pid)
    return sorted(pids)


def train_workers_by_node(session: str | None = None) -> dict[str, list[int]]:
    """node id -> PIDs of the Ray Train workers there, for the cluster under test (read
    from each worker's raylet command line; no dashboard needed)."""
    session = session or ray_session_name()
    found: dict[str, list[int]] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if WORKER_TITLE not in cmdline or "ray::" not in cmdline:
            continue
        try:
            raylet = proc.parent().cmdline()
        except (psutil.Error, AttributeError):
            continue
        node = next((arg.split("=", 1)[1] for arg in raylet if arg.startswith("--node_id=")),
                    None)
        if node and any(f"/{session}/" in arg for arg in raylet):
            found.setdefault(node, []).append(proc.pid)
    return found


def kill_train_worker(rank_hint: int = -1) -> int:
    """SIGKILL one Ray Train worker of the cluster under test (the last by PID by
    default); return its PID."""
    pids = train_worker_pids()
    if not pids:
        raise RuntimeError("no Ray Train worker process found in this Ray session")
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
