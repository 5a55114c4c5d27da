"""The live scheduler as a detached, named Ray actor on the head node.

:class:`SchedulerService` is a plain class: it wires a
:class:`~costsched.scheduler.controller.SchedulerController` to the Ray cluster
client and job runner, runs one scheduling round every ``round_s`` on a thread,
and publishes metrics. :func:`start_service` makes it an actor only at the call
site. The actor restarts without limit; a restarted actor reloads the jobs
from the SQLite state file, and the controller's recovery re-adopts the runs
whose driver actors are still alive (they are detached and outlive it) and
restarts the others from their checkpoints.

User commands reach it through :mod:`costsched.ray_layer.scheduler.client`.
Every public method returns plain data; a user error comes back as
``{"error": message, "exit_code": n}`` so the client can print one line.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from costsched.config.scheduler import SchedulerConfig
from costsched.cost.accounting import record_submitted_plan
from costsched.cost.prices import load_catalog
from costsched.errors import CostschedError
from costsched.ray_layer.ledger import ledger_for
from costsched.ray_layer.scheduler.cluster import RayClusterClient, head_node_id
from costsched.ray_layer.scheduler.driver import keep_code
from costsched.ray_layer.scheduler.metrics import MetricsExporter
from costsched.ray_layer.scheduler.names import NAMESPACE, SERVICE_NAME
from costsched.ray_layer.scheduler.notices import SpotNotices
from costsched.ray_layer.scheduler.runner import RayJobRunner
from costsched.scheduler.controller import SchedulerController
from costsched.scheduler.interfaces import SystemClock, TickReport
from costsched.scheduler.metrics import measure
from costsched.scheduler.state import RUNNING

log = logging.getLogger("costsched.scheduler")
STOP_POLL_S = 1.0
"""How often stops in flight are checked between rounds."""


def _user_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Return a user error as data: the caller prints it, the actor carries on."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except CostschedError as exc:
            return {"error": str(exc), "exit_code": exc.exit_code}

    return wrapped


class SchedulerService:
    """Controller + round loop + metrics; see the module docstring."""

    def __init__(self, config: SchedulerConfig):
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.config = config
        catalog = load_catalog(config.prices_path)
        self.controller = SchedulerController.from_config(
            config,
            cluster=RayClusterClient(config.accelerator_resource, catalog,
                                     SpotNotices(config.spot_notice_url)),
            runner=RayJobRunner(catalog, config.ledger_path, config.storage_path,
                                stop_grace_s=config.stop_grace_s),
            clock=SystemClock(), ledger=ledger_for(config.ledger_path, catalog))
        self.started_at = time.time()
        self.rounds = 0
        self.last_round_at: float | None = None
        self._lock = threading.Lock()  # the controller is not thread-safe
        self._wake = threading.Event()
        self._stopping = False
        self._metrics = MetricsExporter()
        self._thread = threading.Thread(target=self._loop, name="scheduler-rounds", daemon=True)
        self._thread.start()
        log.info("scheduler up: policy %s, a round every %gs, state %s",
                 config.policy, config.round_s, config.state_path)

    # -- the round loop --------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            self._round()
            next_round = time.monotonic() + self.config.round_s
            # While stops are in flight, finish each within a second of its run ending
            # (a resize's new start waits for it), without a whole round.
            while not self._wake.wait(min(STOP_POLL_S, max(next_round - time.monotonic(), 0))):
                if time.monotonic() >= next_round:
                    break
                if self.controller.runner.busy:
                    self._finish_stops()
            self._wake.clear()

    def _finish_stops(self) -> None:
        try:
            with self._lock:
                self.controller.finish_stops()
        except Exception:  # noqa: BLE001 - retried next time
            log.exception("finishing stops failed; retrying")

    def _round(self) -> None:
        try:
            with self._lock:
                if self._stopping:
                    return
                report = self.controller.tick()
                rows = self.controller.status()
            self.rounds += 1
            self.last_round_at = report.time_s
            self._log_round(report)
            nodes = self.controller.node_records  # the round's own read (watchers asked once)
            self._metrics.publish(measure(rows, nodes if nodes is not None
                                          else self.controller.cluster.nodes()))
        except Exception:  # noqa: BLE001 - a round must never kill the service
            log.exception("scheduling round failed; retrying next round")

    @staticmethod
    def _log_round(report: TickReport) -> None:
        for action in report.actions:
            log.info("%s %s: %s", action.kind, action.job_id, action.detail)
        for alert in report.alerts:
            log.warning("ALERT %s", alert)

    # -- user commands -----------------------------------------------------------
    @_user_errors
    def submit(self, config_text: str, overrides: dict[str, Any],
               source: str = "<submitted job config>",
               request_id: str | None = None,
               plan: dict[str, Any] | None = None) -> dict[str, Any]:
        """Queue a job; the next round (started now) may run it. A retried call with
        the same ``request_id`` returns the job the first one made. ``plan``: the newest
        dry-run forecast of the config, kept for its run's launch forecast
        (:mod:`costsched.scheduler.launch`)."""
        with self._lock:  # the plan is kept before any round can start the job
            job_id = self.controller.submit(config_text, overrides, source, request_id)
            config = self.controller.job_config(job_id)
            keep_code(config)
            if plan is not None:
                try:
                    record_submitted_plan(self.controller.ledger, config, plan)
                except Exception:  # noqa: BLE001 - the job is queued; its forecast is advice
                    log.warning("job %s: its dry-run forecast was not kept", job_id,
                                exc_info=True)
        log.info("submitted %s", job_id)
        self._wake.set()
        return {"job_id": job_id}

    def wake(self) -> None:
        """Run a round now (a spot node's watcher read its reclaim notice)."""
        self._wake.set()

    @_user_errors
    def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop the job at a checkpoint and mark it CANCELLED."""
        with self._lock:
            self.controller.cancel(job_id)
        self._wake.set()
        return {"job_id": job_id}

    @_user_errors
    def status(self) -> dict[str, Any]:
        """Every job's row, and the service's own state."""
        rows = [dataclasses.asdict(r) for r in self.controller.status()]
        return {"jobs": rows, "service": self.info()}

    @_user_errors
    def logs(self, job_id: str) -> dict[str, Any]:
        """The job's events, oldest first."""
        self.controller.store.get(job_id)  # unknown id: a user error
        return {"events": self.controller.logs(job_id)}

    def info(self) -> dict[str, Any]:
        """Policy, round length, rounds run and when, and the state file."""
        return {"policy": self.config.policy, "round_s": self.config.round_s,
                "state_path": self.config.state_path, "ledger_path": self.config.ledger_path,
                "rounds": self.rounds, "last_round_at": self.last_round_at,
                "stops_in_flight": getattr(self.controller.runner, "stops_in_flight", 0),
                "started_at": self.started_at}

    def shutdown(self) -> dict[str, Any]:
        """Stop scheduling; stop running jobs at a checkpoint and mark them PREEMPTED,
        so a scheduler started later resumes them."""
        self._stopping = True
        self._wake.set()
        stopped = []
        with self._lock:
            for job in self.controller.store.jobs(RUNNING):
                self.controller.runner.stop(job.job_id, "preempted")
                self.controller.store.transition(
                    job.job_id, "PREEMPTED", now=time.time(), kind="preempted",
                    detail="scheduler stopped; resumes when a scheduler runs again",
                    workers=0, placement={}, usd_per_hour=0.0)
                stopped.append(job.job_id)
            self.controller.runner.drain(self.config.stop_grace_s)
            self.controller.finish_stops()
        return {"stopped": stopped}


def start_service(config: SchedulerConfig) -> ray.actor.ActorHandle:
    """The running scheduler actor, created (detached, on the head node) if there is none."""
    actor = ray.remote(SchedulerService).options(
        name=SERVICE_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_concurrency=8, num_cpus=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False))
    return actor.remote(config)
