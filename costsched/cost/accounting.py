"""Turns a training run's event stream into ledger intervals (pure; no Ray).

Workers report metrics that carry ``attempt_started_at`` (when this attempt's
training function started) and ``world_size``. A new ``attempt_started_at``
means the worker group restarted (failure or resize): the previous interval
closes and a new one opens where it ended, so intervals stay contiguous.

The in-run cost estimate workers show follows the same rule, so after a
failure restart at the same size it equals the ledger; after a resize it
charges the restart gap at the new worker count while the ledger charges it
at the old one until it sees the new group. The ledger is authoritative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from costsched.cost.ledger import Ledger
from costsched.cost.prices import JobRate

ATTEMPT_KEY = "attempt_started_at"
WORLD_SIZE_KEY = "world_size"
CHECKPOINTED_KEY = "checkpointed"


@dataclass
class _OpenInterval:
    interval_id: int
    attempt_started_at: float


class RunAccountant:
    """Feeds one run's events into the ledger. Clock values are passed in."""

    def __init__(self, ledger: Ledger, run_id: str, *, run_started_at: float,
                 accelerators_per_worker: float, resources: dict[str, float]):
        self.ledger = ledger
        self.run_id = run_id
        self.accelerators_per_worker = accelerators_per_worker
        self.resources = resources
        self._next_start = run_started_at
        self._open: _OpenInterval | None = None

    def on_report(self, metrics: dict[str, Any], *, now: float) -> None:
        attempt = float(metrics[ATTEMPT_KEY])
        if self._open is not None and self._open.attempt_started_at != attempt:
            # The group restarted without a reported failure: an elastic resize.
            self._close(now=attempt, outcome="RESIZED")
        if self._open is None:
            interval_id = self.ledger.open_interval(
                self.run_id, started_at=self._next_start,
                num_workers=int(metrics[WORLD_SIZE_KEY]),
                accelerators_per_worker=self.accelerators_per_worker,
                resources=self.resources,
            )
            self._open = _OpenInterval(interval_id, attempt)
        self.ledger.heartbeat(
            self._open.interval_id, now=now, checkpointed=bool(metrics.get(CHECKPOINTED_KEY))
        )

    def on_failure(self, *, now: float) -> None:
        if self._open is not None:
            self._close(now=now, outcome="FAILED")

    def _close(self, *, now: float, outcome: str) -> None:
        assert self._open is not None
        self.ledger.close_interval(self._open.interval_id, now=now, outcome=outcome)
        ended = [r for r in self.ledger.intervals(self.run_id)
                 if r["interval_id"] == self._open.interval_id][0]["ended_at"]
        self._next_start = ended
        self._open = None


def cost_so_far_usd(
    *, usd_at_checkpoint: float, checkpoint_wall_time: float, now: float,
    world_size: int, rate: JobRate,
) -> float:
    """Cumulative dollars of a run, as a worker can compute it after a restart.

    usd = usd_at_checkpoint
          + rate.usd(num_workers=world_size, seconds=now - checkpoint_wall_time)

    The time between the checkpoint and a restart (work lost, the restart
    itself) is charged too, at the current worker count: users pay for it.
    Before the first checkpoint, pass 0 and the run's start time.
    """
    return usd_at_checkpoint + rate.usd(num_workers=world_size,
                                        seconds=max(0.0, now - checkpoint_wall_time))
