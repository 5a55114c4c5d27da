"""Driving a live controller round by round in a real-Ray test, until something holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from costsched.cost.accounting import ATTEMPT_KEY
from costsched.ray_layer import channel
from costsched.scheduler.state import TERMINAL


def tick_until(controller, job_id: str, done: Callable[[], Any], timeout_s: float, what: str,
               *, tick_s: float) -> Any:
    """Tick ``controller`` every ``tick_s`` until ``done()`` is truthy (returned); fails
    with ``what`` and the job's log if the job ends first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not (value := done()):
        job = controller.store.get(job_id)
        assert job.state not in TERMINAL, (what, job.state, controller.logs(job_id))
        assert time.monotonic() < deadline, (what, controller.logs(job_id))
        controller.tick()
        time.sleep(tick_s)
    return value


def stepped(job_id: str, since: float, workers: int | None = None) -> dict[str, Any] | None:
    """The job's progress once an attempt begun after ``since`` (on ``workers``, if
    given) has reported a step past the one it resumed from; else None."""
    p = channel.progress(job_id) or {}
    if workers is not None and p.get("world_size") != workers:
        return None
    return p if (p.get(ATTEMPT_KEY, 0) > since and p.get("global_step", 0) > max(
        p.get("resumed_from_step", 0), 0)) else None
