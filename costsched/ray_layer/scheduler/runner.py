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

Stopping (a preemption, a resize, a budget stop, a cancel) checkpoints first:
the runner writes a stop request into the run's folder, the workers see it
within a few steps (``training.loop.STOP_POLL_STEPS``), save a checkpoint and
end, and the run's ledger interval closes there. A run that has not ended
within ``stop_grace_s`` (or whose storage is a URI, where no request can be
written, or whose node was lost) is killed: work since its newest checkpoint is
lost and the ledger's open interval is closed at its last heartbeat.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from costsched.config.job import JobConfig
from costsched.cost.accounting import ATTEMPT_KEY, RunAccount
from costsched.cost.ledger import Ledger
from costsched.cost.prices import PriceCatalog
from costsched.goodput.restart import StartMarks, phases_from_report
from costsched.ray_layer.scheduler.cluster import head_node_id, remove_orphaned_placement_groups
from costsched.ray_layer.scheduler.names import DRIVER_PREFIX, NAMESPACE
from costsched.scheduler.interfaces import JobProgress, RunHandle
from costsched.scheduler.job_models import Measurement, measurement_from_report
from costsched.training.state import clear_stop_request, eta_s, read_progress, request_stop

log = logging.getLogger(__name__)

FINISHED = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED")
STOP_OUTCOMES = {"preempted": "PREEMPTED", "budget": "BUDGET_EXHAUSTED",
                 "cancelled": "CANCELLED", "resize": "RESIZED", "node_lost": "NODE_LOST",
                 "stalled": "STALLED"}


CODE_PIN_S = 30 * 24 * 3600
"""How long a submitted job's code package is kept on the cluster without a running
job using it (Ray deletes unreferenced packages)."""


def code_env(job: JobConfig) -> dict | None:
    """The runtime environment of a job's driver (and so its workers): the job's code
    package as working directory, when ``costsched submit`` shipped one."""
    uri = job.working_dir
    return {"working_dir": uri} if uri and "://" in uri else None


def keep_code(job: JobConfig) -> None:
    """Keep the job's code package on the cluster while the job may still run."""
    if code_env(job) is not None:
        from ray._private.runtime_env.packaging import pin_runtime_env_uri

        pin_runtime_env_uri(job.working_dir, expiration_s=CODE_PIN_S)


def measurement_of(progress: dict) -> Measurement | None:
    """The step measurement a run's last report carried, if it measured its steps, with
    its epoch, global step, validation metric and global batch for the job's curve."""
    return measurement_from_report(progress)


ERROR_LINES = 40
"""Lines kept of a failed run's error: the user's traceback, innermost frames last."""


def error_text(exc: BaseException) -> str:
    """A run's error for ``costsched logs``: the message and the traceback's last lines."""
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += "\n" + str(cause).strip()
    lines = text.splitlines()
    return "\n".join(lines[:2] + (["..."] if len(lines) > ERROR_LINES else [])
                     + lines[max(2, len(lines) - ERROR_LINES + 2):])


class RunDriver:
    """Drives one run of one job; ``run`` once, then ``result`` any number of times
    (a call queues behind ``run``, so its reference is ready when the run ends)."""

    def __init__(self, job: JobConfig, catalog: PriceCatalog, ledger_path: str, run_id: str,
                 worker_nodes: list[str] | None, batch_size: int | None = None,
                 requested_at: float | None = None):
        self.args = (job, catalog, ledger_path, run_id, worker_nodes, batch_size, requested_at)
        self.outcome: tuple[str, dict] | None = None
        self.error: str | None = None

    def run(self) -> dict:
        from costsched.config.entrypoint import import_entrypoint
        from costsched.ray_layer.train.trainer import run_job
        from costsched.training.data import prepare

        job, catalog, ledger_path, run_id, worker_nodes, batch_size, requested_at = self.args
        driver_started_at = time.time()
        try:
            if job.entrypoint:
                import_entrypoint(job.entrypoint)  # fails here, before workers are asked for
            splits = prepare(job.dataset) if job.dataset is not None else None
            marks = StartMarks(requested_at=requested_at, driver_started_at=driver_started_at,
                               prepare_s=time.time() - driver_started_at)
            result = run_job(job, splits, catalog=catalog,
                             ledger=Ledger(ledger_path, catalog), run_id=run_id, verbose=False,
                             worker_nodes=worker_nodes, batch_size=batch_size,
                             start_marks=marks)
            self.outcome = (result.outcome, {"global_step": result.metrics.get("global_step")})
        except Exception as exc:  # noqa: BLE001 - reported to the scheduler by result()
            self.error = error_text(exc)
        return self.result()

    def result(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        outcome, metrics = self.outcome or ("FAILED", {})
        return {"outcome": outcome, "metrics": metrics}


def worker_nodes(placement: Mapping[str, int], num_workers: int,
                 slots_per_worker: int) -> list[str] | None:
    """One node id per worker from ``placement`` (slots per node); None when the
    placement does not say where every worker goes."""
    nodes = [node for node, slots in sorted(placement.items())
             for _ in range(slots // max(slots_per_worker, 1))]
    return nodes[:num_workers] if len(nodes) >= num_workers else None


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
        self._attempts: dict[str, tuple[float, int]] = {}
        """Job id -> (when this runner started its current attempt, its workers)."""
        self._stop_s: dict[str, float] = {}
        """Seconds the job's last stop took, until the next start takes it as its first
        phase (a start after a failure or a node loss had no stop: 0)."""
        self._attempt_stop_s: dict[str, float] = {}
        """The stop phase of the job's current attempt."""

    def _run_dir(self, job_id: str) -> str | None:
        return None if "://" in self.storage_path else os.path.join(self.storage_path, job_id)

    def _ledger(self) -> Ledger:
        return Ledger(self.ledger_path, self.catalog)

    @staticmethod
    def _driver(job_id: str) -> ray.actor.ActorHandle | None:
        try:
            return ray.get_actor(DRIVER_PREFIX + job_id, namespace=NAMESPACE)
        except ValueError:
            return None

    def _ref(self, job_id: str) -> ray.ObjectRef | None:
        """The run's result reference; after a scheduler restart, reattached by name."""
        ref = self._refs.get(job_id)
        if ref is None:
            driver = self._driver(job_id)
            if driver is not None:
                ref = self._refs[job_id] = driver.result.remote()
        return ref

    def start(self, job_id: str, config: JobConfig, num_workers: int,
              placement: Mapping[str, int], batch_size: int | None = None) -> RunHandle:
        """Start (or resume) the job's run on ``num_workers`` workers, pinned to
        ``placement``'s nodes, at global ``batch_size`` (None: the config's);
        idempotent while its run is alive."""
        requested_at = time.time()
        self._configs[job_id] = config
        handle = RunHandle(run_id=job_id,
                           checkpoint_path=f"{self.storage_path.rstrip('/')}/{job_id}")
        ref = self._ref(job_id)
        if ref is not None and not ray.wait([ref], timeout=0)[0]:
            return handle
        self._attempt_stop_s[job_id] = self._stop_s.pop(job_id, 0.0)
        self._remove(job_id)
        remove_orphaned_placement_groups()  # slots a run killed while starting still holds
        run_dir = self._run_dir(job_id)
        if run_dir is not None:
            clear_stop_request(run_dir)  # an old request must not end the new attempt
        scaling = dataclasses.replace(config.scaling, min_workers=num_workers,
                                      max_workers=num_workers)
        job = dataclasses.replace(config, scaling=scaling, storage_path=self.storage_path,
                                  ledger_path=self.ledger_path)
        nodes = worker_nodes(placement, num_workers, round(scaling.accelerators_per_worker))
        driver = ray.remote(RunDriver).options(
            name=DRIVER_PREFIX + job_id, namespace=NAMESPACE, lifetime="detached",
            # Hard affinity: a 0-CPU actor is otherwise placed on any node, and Ray Data's
            # helpers follow the driver there and keep that node from ever being idle.
            num_cpus=0, max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                head_node_id(), soft=False), runtime_env=code_env(job),
        ).remote(job, self.catalog, self.ledger_path, job_id, nodes, batch_size, requested_at)
        self._refs[job_id] = driver.run.remote()
        self._attempts[job_id] = (time.time(), num_workers)
        return handle

    def resize(self, job_id: str, num_workers: int, placement: Mapping[str, int],
               batch_size: int | None = None) -> None:
        """Stop at a fresh checkpoint, then resume on ``num_workers`` workers."""
        config = self._configs.get(job_id)
        if config is None:
            raise KeyError(f"job {job_id} was never started by this runner")
        self.stop(job_id, "resize")
        self.start(job_id, config, num_workers, placement, batch_size)

    def stop(self, job_id: str, reason: str) -> None:
        """Checkpoint and end the run (idempotent); see the module docstring.
        It resumes from that checkpoint when started again."""
        ref = self._ref(job_id)
        self._refs.pop(job_id, None)
        if ref is None:
            return
        stop_started = time.time()
        outcome = STOP_OUTCOMES.get(reason, "STOPPED")
        run_dir = self._run_dir(job_id)
        attempt = self._attempts.pop(job_id, None)
        # Still starting (no report yet this attempt): nothing to checkpoint, so waiting
        # for a step would only spend money.
        starting = attempt is not None and not self._reported_since(job_id, attempt[0])
        graceful = run_dir is not None and reason not in ("node_lost", "stalled") \
            and not starting
        if graceful and not ray.wait([ref], timeout=0)[0]:
            request_stop(run_dir, outcome)
            ray.wait([ref], timeout=self.stop_grace_s)
        if not ray.wait([ref], timeout=0)[0] and graceful:
            log.warning("run %s did not stop within %.0f s; killing it (work since its "
                        "newest checkpoint is lost)", job_id, self.stop_grace_s)
        self._remove(job_id)
        if starting:  # its Train controller dies with the driver: free what it reserved
            deadline = time.monotonic() + 5.0
            while not remove_orphaned_placement_groups() and time.monotonic() < deadline:
                time.sleep(0.5)
        self._stop_s[job_id] = time.time() - stop_started
        account = RunAccount(self._ledger(), job_id)
        config = self._configs.get(job_id)
        if starting and config is not None:
            if not account.exists():  # killed before its driver opened the run: charge it
                account.open(config, now=attempt[0])
            account.charge_start_up(
                attempt_started_at=attempt[0], now=time.time(), num_workers=attempt[1],
                accelerators_per_worker=config.scaling.accelerators_per_worker,
                resources=config.scaling.resources_per_worker())
        # Charged until the kill freed its workers; a run that failed under the stop
        # ended as the stop says (a cancel is CANCELLED), not FAILED.
        account.abandon(outcome=outcome, relabel_failed=True, now=time.time())

    def _reported_since(self, job_id: str, since: float) -> bool:
        run_dir = self._run_dir(job_id)
        if run_dir is None:
            return True  # cannot tell: assume it has work to lose
        progress = read_progress(run_dir)
        return progress is not None and float(progress.get("reported_at", 0.0)) >= since

    def _remove(self, job_id: str) -> None:
        """Kill the job's driver actor (and with it its Train run), if any."""
        self._refs.pop(job_id, None)
        driver = self._driver(job_id)
        if driver is not None:
            ray.kill(driver, no_restart=True)

    def poll(self, job_id: str) -> JobProgress:
        """running / finished (outcome from the run) / failed / lost."""
        spent = self._ledger().run_cost_usd(job_id)
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
        run's progress file (written at every report); without one (a URI storage, or
        before the first report) the open interval's last heartbeat dates the progress."""
        run_dir = self._run_dir(job_id)
        progress = read_progress(run_dir) if run_dir is not None else None
        if progress is not None and "global_step" in progress:
            phases = phases_from_report(progress)
            return JobProgress(state="running", spent_usd=spent,
                               last_step=int(progress["global_step"]),
                               last_step_at=float(progress["reported_at"]),
                               eta_s=eta_s(progress), measurement=measurement_of(progress),
                               restart_phases=None if phases is None else phases | {
                                   "stop": self._attempt_stop_s.get(job_id, 0.0)},
                               attempt_at=progress.get(ATTEMPT_KEY))
        beats = [i["ended_at"] for i in self._ledger().intervals(job_id)
                 if i["outcome"] == "RUNNING"]
        return JobProgress(state="running", spent_usd=spent,
                           last_step_at=max(beats) if beats else None)
