"""Frees the slots of trials that ended while their Train worker group was starting.

A trial stopped by the scheduler (ASHA) or by its cap while its ``TorchTrainer``
is still starting leaves the worker placement group its Train controller made:
the controller dies with the trial, but the group outlives it and holds the
trial's slots, so every later trial waits for workers forever. This callback
removes such groups (their creator is dead) while the sweep runs, and after its last
trial ended until no Train controller is left alive, a few seconds at most (a trial
ended at its cap as the sweep ends: its controller dies a moment after it, and its
group would hold the slots for good).
"""

from __future__ import annotations

import time

from ray.tune import Callback

from costsched.ray_layer.scheduler.cluster import free_orphans

SWEEP_EVERY_S = 5.0
"""How often, at most, the placement-group table is read (one GCS call)."""
SETTLE_S = 8.0
"""How long after the last trial the groups of dying controllers are still looked for."""


class FreeOrphanedSlots(Callback):
    """Removes placement groups whose creating actor died, as trials end."""

    def __init__(self, every_s: float = SWEEP_EVERY_S):
        self.every_s = every_s
        self._last = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            free_orphans()

    def on_experiment_end(self, trials: list, **info) -> None:
        """Free orphaned groups until no Train controller is left alive (the trials'
        controllers die a moment after them), for at most :data:`SETTLE_S`."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            free_orphans()
            if time.monotonic() >= deadline or not controllers_alive():
                break
            time.sleep(1.0)
        free_orphans()


def controllers_alive() -> bool:
    """Whether any Ray Train controller is alive or starting on the cluster (True when
    the state API cannot tell: then the whole settle time is waited)."""
    try:
        from ray.util.state import list_actors

        return bool(list_actors(filters=[("class_name", "=", "TrainController"),
                                         ("state", "!=", "DEAD")], limit=10,
                                raise_on_missing_output=False))
    except Exception:  # noqa: BLE001 - no dashboard: fall back to waiting
        return True
