"""Runs the scheduler's jobs on Ray: one detached driver actor per job, calling ``run_job``.

Implements :class:`costsched.scheduler.interfaces.JobRunner`. Each job's run id
is its job id, so a restart (after a preemption, a resize, a failure) resumes
the same run from its newest checkpoint, and the ledger keeps charging one run.

The driver is a detached, named actor (``costsched-run-<job id>``) on the head
node (worker nodes may be spot capacity) that holds no CPU (its Train workers
do). It outlives the scheduler actor: a restarted scheduler finds it by name
and reattaches, so a scheduler crash loses no training. Its Train controller,
workers and placement group are scoped to it, so killing it frees them all.

Workers are pinned to the nodes the policy granted (a ``ray.io/node-id`` label
selector per worker), so a job's placement is where it really runs.

Stopping (a preemption, a resize, a budget stop, a cancel) checkpoints first and
never blocks the caller: :meth:`RayJobRunner.stop` posts a stop request on the
run's channel (Ray's key-value store, :mod:`costsched.ray_layer.channel`; nodes
share no disk) and returns; the workers see it within a few steps
(``training.run.STOP_POLL_STEPS``), save a checkpoint to the job's storage and
end. :meth:`RayJobRunner.advance`, called every round (and every second while
stops are in flight), finishes each stop: once the run has ended, or at its
deadline (``stop_grace_s``, or sooner when the job would reach its budget cap),
it kills the driver, frees what it held and closes its ledger interval at the
kill. A start on slots a stopping run still holds (a resize, or another job
given a preempted job's slots) waits until that stop has finished, so nothing
is charged for waiting. A run still starting (nothing to checkpoint), one whose
node was lost and a stalled one are killed at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from costsched.config.job import CostSection, JobConfig
from costsched.cost.accounting import ATTEMPT_KEY, RunAccount
from costsched.cost.ledger import Ledger
from costsched.cost.prices import JobRate, PriceCatalog, rate_of_job
from costsched.goodput.restart import phases_from_report
from costsched.ray_layer import channel
from costsched.ray_layer.scheduler.cluster import (
    billed_cost,
    free_orphans,
    head_node_id,
    node_resources,
)
from costsched.ray_layer.scheduler.driver import RunDriver, code_env
from costsched.ray_layer.scheduler.names import DRIVER_PREFIX, NAMESPACE
from costsched.scheduler.interfaces import JobProgress, RunHandle
from costsched.scheduler.job_models import Measurement, measurement_from_report
from costsched.training.state import eta_s, reported_total_steps

log = logging.getLogger(__name__)

FINISHED = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED")
STOP_OUTCOMES = {"preempted": "PREEMPTED", "budget": "BUDGET_EXHAUSTED",
                 "cancelled": "CANCELLED", "resize": "RESIZED", "node_lost": "NODE_LOST",
                 "stalled": "STALLED", "spot_notice": "SPOT_NOTICE"}


def measurement_of(progress: dict) -> Measurement | None:
    """The step measurement a run's last report carried, if it measured its steps, with
    its epoch, global step, validation metric and global batch for the job's curve."""
    return measurement_from_report(progress)


def worker_nodes(placement: Mapping[str, int], num_workers: int,
                 slots_per_worker: int) -> list[str] | None:
    """One node id per worker from ``placement`` (slots per node); None when the
    placement does not say where every worker goes."""
    nodes = [node for node, slots in sorted(placement.items())
             for _ in range(slots // max(slots_per_worker, 1))]
    return nodes[:num_workers] if len(nodes) >= num_workers else None


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A run this runner started: when, on how many workers, on which nodes."""

    started_at: float
    workers: int
    nodes: frozenset[str]
    cost: CostSection
    """Its cost section, priced at the nodes it runs on."""


@dataclasses.dataclass(frozen=True)
class Stopping:
    """A stop in flight (see :meth:`RayJobRunner.advance`)."""

    ref: ray.ObjectRef
    outcome: str
    started_at: float
    deadline: float
    graceful: bool
    attempt: Attempt | None
    starting: bool


ORPHAN_SWEEP_S = 15.0
"""After a run ends, placement groups whose creator is dead are freed for this long
(the Train controller dies a moment after its driver)."""
KILL_MARGIN_S = 3.0
"""A budget stop's deadline is this long before the job's cap: the kill, and the
round that notices the deadline, take time that is charged too."""


class RayJobRunner:
    """One detached ``RunDriver`` actor per job id; see the module docstring."""

    def __init__(self, catalog: PriceCatalog, ledger_path: str, storage_path: str, *,
                 stop_grace_s: float = 120.0):
        self.catalog = catalog
        self.ledger_path = str(os.path.expanduser(ledger_path))
        self.storage_path = (storage_path if "://" in storage_path
                             else os.path.expanduser(storage_path))
        self.stop_grace_s = stop_grace_s
        self._refs: dict[str, ray.ObjectRef] = {}
        self._configs: dict[str, JobConfig] = {}
        self._attempts: dict[str, Attempt] = {}
        self._stopping: dict[str, Stopping] = {}
        self._pending: dict[str, tuple] = {}
        """Job id -> start arguments, waiting for stops that hold its slots to finish."""
        self._orphan_sweep_until = 0.0
        self._stop_s: dict[str, float] = {}
        """Seconds the job's last stop took, until the next start takes it as its first
        phase (a start after a failure or a node loss had no stop: 0)."""
        self._attempt_stop_s: dict[str, float] = {}
        """The stop phase of the job's current attempt."""

    def _ledger(self) -> Ledger:
        from costsched.ray_layer.ledger import ledger_for

        return ledger_for(self.ledger_path, self.catalog)

    @staticmethod
    def _driver(job_id: str) -> ray.actor.ActorHandle | None:
        try:
            return ray.get_actor(DRIVER_PREFIX + job_id, namespace=NAMESPACE)
        except ValueError:
            return None

    def _ref(self, job_id: str) -> ray.ObjectRef | None:
        """The run's result reference; after a scheduler restart, reattached by name
        (never that of a run being stopped)."""
        ref = self._refs.get(job_id)
        if ref is None and job_id not in self._stopping:
            driver = self._driver(job_id)
            if driver is not None:
                ref = self._refs[job_id] = driver.result.remote()
        return ref

    @property
    def stops_in_flight(self) -> int:
        return len(self._stopping)

    @property
    def busy(self) -> bool:
        """Whether stops (or starts waiting for them) are in flight."""
        return bool(self._stopping or self._pending)

    def start(self, job_id: str, config: JobConfig, num_workers: int,
              placement: Mapping[str, int], batch_size: int | None = None) -> RunHandle:
        """Start (or resume) the job's run on ``num_workers`` workers, pinned to
        ``placement``'s nodes, at global ``batch_size`` (None: the config's), as soon
        as no stopping run holds those nodes; idempotent while its run is alive."""
        self._configs[job_id] = config
        handle = RunHandle(run_id=job_id,
                           checkpoint_path=f"{self.storage_path.rstrip('/')}/{job_id}")
        ref = self._ref(job_id)
        if ref is not None and not ray.wait([ref], timeout=0)[0]:
            return handle
        self._pending[job_id] = (num_workers, dict(placement), batch_size, time.time())
        self._start_pending()
        return handle

    def _start_pending(self) -> None:
        held = {node for s in self._stopping.values() if s.attempt for node in s.attempt.nodes}
        for job_id, (num_workers, placement, batch_size, requested_at) in list(
                self._pending.items()):
            if job_id in self._stopping or held & set(placement) or (
                    self._stopping and not placement):
                continue
            del self._pending[job_id]
            self._launch(job_id, num_workers, placement, batch_size, requested_at)

    def _launch(self, job_id: str, num_workers: int, placement: Mapping[str, int],
                batch_size: int | None, requested_at: float) -> None:
        config = self._configs[job_id]
        self._attempt_stop_s[job_id] = self._stop_s.pop(job_id, 0.0)
        self._remove(job_id)
        free_orphans()  # slots a run killed while starting still holds
        channel.clear_stop(job_id)  # an old request must not end the new attempt
        scaling = dataclasses.replace(config.scaling, min_workers=num_workers,
                                      max_workers=num_workers)
        # Billed at the nodes it runs on, not the type it declared.
        cost = billed_cost(config.cost, placement, self.catalog, node_resources())
        job = dataclasses.replace(config, scaling=scaling, storage_path=self.storage_path,
                                  ledger_path=self.ledger_path, cost=cost)
        nodes = worker_nodes(placement, num_workers, round(scaling.accelerators_per_worker))
        driver = ray.remote(RunDriver).options(
            name=DRIVER_PREFIX + job_id, namespace=NAMESPACE, lifetime="detached",
            # Hard affinity: a 0-CPU actor is otherwise placed on any node, and Ray Data's
            # helpers follow the driver there and keep that node from ever being idle.
            num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                head_node_id(), soft=False), runtime_env=code_env(job),
        ).remote(job, self.catalog, self.ledger_path, job_id, nodes, batch_size, requested_at,
                 config.config_hash(), max(sum(1 for n in placement.values() if n > 0), 1))
        self._refs[job_id] = driver.run.remote()
        self._attempts[job_id] = Attempt(time.time(), num_workers, frozenset(placement),
                                         cost)

    def resize(self, job_id: str, num_workers: int, placement: Mapping[str, int],
               batch_size: int | None = None) -> None:
        """Stop at a fresh checkpoint, then resume on ``num_workers`` workers (the start
        waits for the stop; see :meth:`advance`)."""
        config = self._configs.get(job_id)
        if config is None:
            raise KeyError(f"job {job_id} was never started by this runner")
        self.stop(job_id, "resize")
        self.start(job_id, config, num_workers, placement, batch_size)

    def stop(self, job_id: str, reason: str) -> None:
        """Ask the run to checkpoint and end (idempotent); returns at once, and
        :meth:`advance` finishes the stop. It resumes from that checkpoint when
        started again."""
        self._pending.pop(job_id, None)  # a start still waiting is withdrawn
        ref = self._ref(job_id)
        self._refs.pop(job_id, None)
        if ref is None or job_id in self._stopping:
            return
        now = time.time()
        outcome = STOP_OUTCOMES.get(reason, "STOPPED")
        attempt = self._attempts.pop(job_id, None)
        # Still starting (no report yet this attempt): nothing to checkpoint, so waiting
        # for a step would only spend money.
        starting = attempt is not None and not self._reported_since(job_id, attempt.started_at)
        graceful = reason not in ("node_lost", "stalled") and not starting \
            and not ray.wait([ref], timeout=0)[0]
        if graceful:
            channel.request_stop(job_id, outcome)
        self._stopping[job_id] = Stopping(
            ref=ref, outcome=outcome, started_at=now, graceful=graceful, attempt=attempt,
            starting=starting,
            deadline=now + (min(self.stop_grace_s, self._until_cap_s(job_id, attempt, now))
                            if graceful else 0.0))
        if not graceful:
            self._finish_stop(job_id)

    def _billed_rate(self, job_id: str, attempt: Attempt | None) -> JobRate | None:
        """The rate ``attempt`` of the job is billed at: the nodes it runs on."""
        config = self._configs.get(job_id)
        if config is None or attempt is None:
            return None
        return rate_of_job(dataclasses.replace(config, cost=attempt.cost), self.catalog)

    def _until_cap_s(self, job_id: str, attempt: Attempt | None, now: float) -> float:
        """Seconds until the job, running on, reaches its budget cap (less a margin)."""
        config, rate = self._configs.get(job_id), self._billed_rate(job_id, attempt)
        if rate is None or config.cost.budget_usd == float("inf"):
            return float("inf")
        return RunAccount(self._ledger(), job_id).seconds_to_cap(
            budget_usd=config.cost.budget_usd, now=now, attempt_started_at=attempt.started_at,
            usd_per_worker_s=rate.usd_per_worker_second,
            num_workers=attempt.workers, margin_s=KILL_MARGIN_S)

    def advance(self) -> list[tuple[str, float]]:
        """Finish the stops that are due (the run ended, or its deadline passed) and
        start the runs that waited for them; returns (job id, dollars charged) per
        finished stop."""
        now, done = time.time(), []
        for job_id, stopping in list(self._stopping.items()):
            if now >= stopping.deadline or ray.wait([stopping.ref], timeout=0)[0]:
                done.append((job_id, self._finish_stop(job_id)))
        if now < self._orphan_sweep_until:
            free_orphans()
        self._start_pending()
        return done

    def drain(self, timeout_s: float) -> None:
        """Finish every stop in flight (``shutdown``), waiting at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._stopping and time.monotonic() < deadline:
            self.advance()
            time.sleep(0.2)
        for job_id in list(self._stopping):
            self._finish_stop(job_id)

    def _finish_stop(self, job_id: str) -> float:
        stopping = self._stopping.pop(job_id)
        if stopping.graceful and not ray.wait([stopping.ref], timeout=0)[0]:
            log.warning("run %s did not stop within %.0f s; killing it (work since its "
                        "newest checkpoint is lost)", job_id, time.time() - stopping.started_at)
        self._remove(job_id)
        channel.clear_stop(job_id)
        self._stop_s[job_id] = time.time() - stopping.started_at
        account = RunAccount(self._ledger(), job_id)
        config, attempt = self._configs.get(job_id), stopping.attempt
        if stopping.starting and config is not None and attempt is not None:
            if not account.exists():  # killed before its driver opened the run: charge it
                account.open(config, now=attempt.started_at)
            account.charge_start_up(
                attempt_started_at=attempt.started_at, now=time.time(),
                num_workers=attempt.workers,
                accelerators_per_worker=config.scaling.accelerators_per_worker,
                resources=config.scaling.resources_per_worker(),
                node_type=attempt.cost.instance_type, node_spot=attempt.cost.spot)
        # Charged until the kill freed its workers; a run that failed under the stop
        # ended as the stop says (a cancel is CANCELLED), not FAILED.
        account.abandon(outcome=stopping.outcome, relabel_failed=True, now=time.time())
        return account.cost_usd()

    def _reported_since(self, job_id: str, since: float) -> bool:
        progress = channel.progress(job_id)
        return progress is not None and float(progress.get("reported_at", 0.0)) >= since

    def _remove(self, job_id: str) -> None:
        """Kill the job's driver actor (and with it its Train run), if any, and free the
        placement group its Train controller held: Ray Train's own cleaner may miss it
        (a controller killed while its workers start, or the cleaner failing), and
        slots left reserved would keep every later job from starting."""
        self._refs.pop(job_id, None)
        driver = self._driver(job_id)
        if driver is not None:
            ray.kill(driver, no_restart=True)
        self._orphan_sweep_until = time.time() + ORPHAN_SWEEP_S
        free_orphans()

    def poll(self, job_id: str) -> JobProgress:
        """running / finished (outcome from the run) / failed / lost."""
        spent = self._ledger().run_cost_usd(job_id)
        if job_id in self._pending:  # waiting for the slots a stopping run frees
            return JobProgress(state="running", spent_usd=spent)
        ref = self._ref(job_id)
        if ref is None:
            return JobProgress(state="lost", spent_usd=spent, message="no live run")
        if not ray.wait([ref], timeout=0)[0]:
            return self._running(job_id, spent)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError,
                ray.exceptions.WorkerCrashedError) as exc:
            self._remove(job_id)
            account = RunAccount(self._ledger(), job_id)
            if account.outcome() == "BUDGET_EXHAUSTED":  # its cap watchdog ended it
                return JobProgress(state="finished", outcome="BUDGET_EXHAUSTED",
                                   spent_usd=account.cost_usd(), message="ended at its cap")
            # Its driver died (with its node, or killed): its run and workers went with
            # it. Charged until now, when that was seen, not its last heartbeat.
            account.abandon(outcome="FAILED", now=time.time())
            spent = account.cost_usd()
            return JobProgress(state="failed", node_lost=True, spent_usd=spent,
                               message=str(exc).splitlines()[0][:300])
        self._remove(job_id)
        spent = self._ledger().run_cost_usd(job_id)
        if "error" in result:
            return JobProgress(state="failed", spent_usd=spent, message=result["error"])
        if result["outcome"] not in FINISHED:
            return JobProgress(state="failed", spent_usd=spent, message=result["outcome"])
        return JobProgress(state="finished", outcome=result["outcome"], spent_usd=spent,
                           last_step=int(result["metrics"].get("global_step") or 0),
                           message=result["outcome"])

    def _running(self, job_id: str, spent: float) -> JobProgress:
        """A live run's progress: step, when it was reported and the ETA come from the
        run's channel (written at every report); before the first report the open
        interval's last heartbeat dates the progress."""
        progress = channel.progress(job_id)
        attempt = self._attempts.get(job_id)
        rate = self._billed_rate(job_id, attempt)  # budget stops project with it
        usd_per_hour = 0.0 if rate is None else rate.usd_per_hour(attempt.workers)
        if progress is not None and "global_step" in progress and (
                attempt is None or float(progress["reported_at"]) >= attempt.started_at):
            phases = phases_from_report(progress)
            return JobProgress(state="running", spent_usd=spent, usd_per_hour=usd_per_hour,
                               last_step=int(progress["global_step"]),
                               last_step_at=float(progress["reported_at"]),
                               total_steps=reported_total_steps(progress),
                               eta_s=eta_s(progress), measurement=measurement_of(progress),
                               restart_phases=None if phases is None else phases | {
                                   "stop": self._attempt_stop_s.get(job_id, 0.0)},
                               attempt_at=progress.get(ATTEMPT_KEY))
        beats = [i["ended_at"] for i in self._ledger().intervals(job_id)
                 if i["outcome"] == "RUNNING"]
        return JobProgress(state="running", spent_usd=spent, usd_per_hour=usd_per_hour,
                           last_step_at=max(beats) if beats else None)
