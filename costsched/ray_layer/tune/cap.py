"""A run's hard cap, held even when the run cannot stop itself: sweep trials and the
live scheduler's run drivers (:mod:`costsched.ray_layer.scheduler.driver`) both use it.

A run's own loop stops at its budget, but only when it reports: a run still starting
(slow under load) or stuck between reports would run past its cap, and a scheduler that
is late or down cannot stop it. The watchdog here ends it at the cap: it charges the run
to that moment in the ledger, marks it ``BUDGET_EXHAUSTED`` and exits the process that
drives it (the trial, or the scheduler's driver actor), which ends its Train controller
and workers with it (Ray's fate sharing; the sweep's
:class:`~costsched.ray_layer.tune.release.FreeOrphanedSlots` and the scheduler's runner
free their slots). The ledger then refuses the dead run's late reports
(:meth:`Ledger.open_interval`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from costsched.cost.accounting import RunAccount
from costsched.cost.prices import PriceCatalog, rate_of_job

if TYPE_CHECKING:
    from costsched.config.job import JobConfig
    from costsched.cost.ledger import Ledger

log = logging.getLogger(__name__)

KILL_MARGIN_S = 2.0
"""The watchdog fires this long before the cap: writing the charge and exiting take time."""
POLL_S = 2.0
"""Longest wait between two looks at the run's spend (its size can change: elastic)."""


class CapWatchdog:
    """Ends run ``run_id`` of ``job`` at its cap (``job.cost.budget_usd``) unless it
    ended first. Use as a context manager around the run; ``exit`` is what ends the
    process (``os._exit`` by default; tests pass their own)."""

    def __init__(self, job: JobConfig, run_id: str, *, ledger: Ledger | object,
                 catalog: PriceCatalog, exit=os._exit):
        self.job, self.run_id, self._exit = job, run_id, exit
        self.account = RunAccount(ledger, run_id)  # type: ignore[arg-type]
        self.usd_per_worker_s = rate_of_job(job, catalog).usd_per_worker_second
        self.started = time.time()  # before the run opens: its charges start later
        self._done = threading.Event()
        self.fired = False

    def seconds_left(self, now: float) -> float:
        """Seconds until the run reaches its cap, less the kill's margin: at its open
        interval's size once it reports, at ``max_workers`` before (the most it holds)."""
        return self.account.seconds_to_cap(
            budget_usd=self.job.cost.budget_usd, usd_per_worker_s=self.usd_per_worker_s,
            now=now, attempt_started_at=self.started,
            num_workers=self.job.scaling.max_workers, margin_s=KILL_MARGIN_S)

    def __enter__(self) -> CapWatchdog:
        if self.job.cost.budget_usd != float("inf"):
            threading.Thread(target=self._watch, name="costsched-cap", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.is_set():
            left = self.seconds_left(time.time()) if self.account.exists() else POLL_S
            if left <= 0.0:
                if self.stop_at_cap(now=time.time()):
                    self._exit(1)
                return
            self._done.wait(min(left, POLL_S))

    def stop_at_cap(self, *, now: float) -> bool:
        """Charge the run to ``now`` and mark it ``BUDGET_EXHAUSTED``, in one ledger
        call; False if it had already ended (its own stop won the race)."""
        scaling = self.job.scaling
        self.fired = self.account.end_at_cap(
            attempt_started_at=self.started, now=now, num_workers=scaling.max_workers,
            accelerators_per_worker=scaling.accelerators_per_worker,
            resources=scaling.resources_per_worker())
        if self.fired:
            log.warning("run %s reached its $%g cap before it could stop itself; ended at "
                        "the cap", self.run_id, self.job.cost.budget_usd)
        return self.fired
