"""Frees the slots of trials that ended while their Train worker group was starting.

A trial stopped by the scheduler (ASHA) or by its cap while its ``TorchTrainer``
is still starting leaves the worker placement group its Train controller made:
the controller dies with the trial, but the group outlives it and holds the
trial's slots, so every later trial waits for workers forever. This callback
removes such groups (their creator is dead) while the sweep runs.
"""

from __future__ import annotations

import time

from ray.tune import Callback

from costsched.ray_layer.scheduler.cluster import free_orphans

SWEEP_EVERY_S = 5.0
"""How often, at most, the placement-group table is read (one GCS call)."""


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
