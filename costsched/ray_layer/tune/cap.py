"""A trial's hard cap, held even when the trial cannot stop itself.

A trial's own loop stops at its budget, but only when it reports: a trial still
starting (slow under load) or stuck between reports would run past its cap. The
watchdog here ends it at the cap: it charges the run to that moment in the ledger,
marks it ``BUDGET_EXHAUSTED`` and exits the trial's process, which ends its Train
controller and workers with it (Ray's fate sharing; the sweep's
:class:`~costsched.ray_layer.tune.release.FreeOrphanedSlots` frees their slots). The
ledger then refuses the dead run's late reports (:meth:`Ledger.open_interval`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from costsched.cost.accounting import RunAccount, seconds_to_cap
from costsched.cost.prices import PriceCatalog, rate_of_job

if TYPE_CHECKING:
    from costsched.config.job import JobConfig
    from costsched.cost.ledger import Ledger

log = logging.getLogger(__name__)

KILL_MARGIN_S = 2.0
"""The watchdog fires this long before the cap: writing the charge and exiting take time."""


class CapWatchdog:
    """Ends run ``run_id`` of ``job`` at its cap (``job.cost.budget_usd``) unless it
    ended first. Use as a context manager around the run; ``exit`` is what ends the
    process (``os._exit`` by default; tests pass their own)."""

    def __init__(self, job: JobConfig, run_id: str, *, ledger: Ledger | object,
                 catalog: PriceCatalog, exit=os._exit):
        self.job, self.run_id, self.ledger, self._exit = job, run_id, ledger, exit
        self.account = RunAccount(ledger, run_id)  # type: ignore[arg-type]
        self.workers = job.scaling.max_workers
        self.usd_per_s = rate_of_job(job, catalog).usd_per_hour(self.workers) / 3600.0
        self.started = time.time()  # before the run opens: its charges start later
        spent = self.account.cost_usd() if self.account.exists() else 0.0
        self.deadline = self.started + seconds_to_cap(
            budget_usd=job.cost.budget_usd, spent_usd=spent, usd_per_s=self.usd_per_s,
            margin_s=KILL_MARGIN_S)
        self._done = threading.Event()
        self.fired = False

    def __enter__(self) -> CapWatchdog:
        if self.deadline != float("inf"):
            threading.Thread(target=self._watch, name="costsched-cap", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(max(self.deadline - time.time(), 0.0)):
            return  # the run ended on its own
        if self.stop_at_cap(now=time.time()):
            self._exit(1)

    def stop_at_cap(self, *, now: float) -> bool:
        """Charge the run to ``now`` and mark it ``BUDGET_EXHAUSTED``; False if it had
        already ended (its own stop won the race)."""
        if self.account.outcome() != "RUNNING":
            return False
        if not any(i["outcome"] == "RUNNING" for i in self.ledger.intervals(self.run_id)):
            # Killed before its first report: its workers were held all the same.
            scaling = self.job.scaling
            self.account.charge_start_up(
                attempt_started_at=self.started, now=now, num_workers=self.workers,
                accelerators_per_worker=scaling.accelerators_per_worker,
                resources=scaling.resources_per_worker())
        self.account.abandon(outcome="BUDGET_EXHAUSTED", now=now)
        self.fired = True
        log.warning("run %s reached its $%g cap before it could stop itself; ended at the "
                    "cap", self.run_id, self.job.cost.budget_usd)
        return True
