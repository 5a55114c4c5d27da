"""Frees the slots of trials that ended while their Train worker group was starting.

A trial stopped by the scheduler (ASHA) or by its cap while its ``TorchTrainer``
is still starting leaves the worker placement group its Train controller made:
the controller dies with the trial, but the group outlives it and holds the
trial's slots, so every later trial waits for workers forever. This callback
removes such groups (their creator is dead) while the sweep runs, and for a few
seconds after its last trial ended (a trial ended at its cap as the sweep ends: its
controller dies a moment after it, and its group would hold the slots for good).
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
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            free_orphans()
            time.sleep(1.0)
