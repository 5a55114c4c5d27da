"""Runs the scheduler's jobs on Ray: one remote driver task per job, calling ``run_job``.

Implements :class:`costsched.scheduler.interfaces.JobRunner`. Each job's run id
is its job id, so a restart (after a preemption, a resize, a failure or a
controller restart) resumes the same run from its newest checkpoint, and the
ledger keeps charging one run.

Stopping (a preemption, a resize, a budget stop, a cancel) checkpoints first:
the runner writes a stop request into the run's folder, the workers see it
within a few steps (``training.loop.STOP_POLL_STEPS``), save a checkpoint and
end, and the run's ledger interval closes there. A run that has not ended
within ``stop_grace_s`` (or whose storage is a URI, where no request can be
written) is killed with ``ray.cancel(force=True)``: the driver task and the Train
controller and workers it owns die, work since the newest checkpoint is lost, and
the ledger's open interval is closed at its last heartbeat.

Run handles live in this object only. The driver tasks are owned by the process
that made them (the scheduler actor), so if that process dies Ray kills them
too; a new runner then reports every job as ``lost`` and the controller
restarts it from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

import ray

from costsched.job_config import JobConfig
from costsched.ledger import Ledger
from costsched.pricing import PriceCatalog
from costsched.scheduler.interfaces import JobProgress, RunHandle
from costsched.training.state import clear_stop_request, eta_s, read_progress, request_stop

log = logging.getLogger(__name__)

FINISHED = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED")
STOP_OUTCOMES = {"preempted": "PREEMPTED", "budget": "BUDGET_EXHAUSTED",
                 "cancelled": "CANCELLED", "resize": "RESIZED"}


@ray.remote(num_cpus=0, max_retries=0)
def _drive(job: JobConfig, catalog: PriceCatalog, ledger_path: str, run_id: str):
    """The job's Train driver, as a Ray task (holds no CPU: its workers do)."""
    from costsched.data import prepare
    from costsched.ray_layer.trainer import run_job

    splits = prepare(job.dataset)
    return run_job(job, splits, catalog=catalog, ledger=Ledger(ledger_path, catalog),
                   run_id=run_id, verbose=False)


class RayJobRunner:
    """One remote ``run_job`` per job id; see the module docstring."""

    def __init__(self, catalog: PriceCatalog, ledger_path: str, storage_path: str, *,
                 stop_grace_s: float = 120.0):
        self.catalog = catalog
        self.ledger_path = ledger_path
        self.storage_path = storage_path
        self.stop_grace_s = stop_grace_s
        self._refs: dict[str, ray.ObjectRef] = {}
        self._configs: dict[str, JobConfig] = {}

    def _run_dir(self, job_id: str) -> str | None:
        return None if "://" in self.storage_path else os.path.join(self.storage_path, job_id)

    def _ledger(self) -> Ledger:
        return Ledger(self.ledger_path, self.catalog)

    def start(self, job_id: str, config: JobConfig, num_workers: int,
              placement: Mapping[str, int]) -> RunHandle:
        """Start (or resume) the job's run on ``num_workers`` workers; idempotent while
        its run is alive. ``placement`` is advisory: Ray Train places the workers."""
        self._configs[job_id] = config
        handle = RunHandle(run_id=job_id,
                           checkpoint_path=f"{self.storage_path.rstrip('/')}/{job_id}")
        ref = self._refs.get(job_id)
        if ref is not None and not ray.wait([ref], timeout=0)[0]:
            return handle
        run_dir = self._run_dir(job_id)
        if run_dir is not None:
            clear_stop_request(run_dir)  # an old request must not end the new attempt
        scaling = dataclasses.replace(config.scaling, min_workers=num_workers,
                                      max_workers=num_workers)
        job = dataclasses.replace(config, scaling=scaling, storage_path=self.storage_path,
                                  ledger_path=self.ledger_path)
        self._refs[job_id] = _drive.remote(job, self.catalog, self.ledger_path, job_id)
        return handle

    def resize(self, job_id: str, num_workers: int, placement: Mapping[str, int]) -> None:
        """Stop at the newest checkpoint, then resume on ``num_workers`` workers."""
        config = self._configs.get(job_id)
        if config is None:
            raise KeyError(f"job {job_id} was never started by this runner")
        self.stop(job_id, "resize")
        self.start(job_id, config, num_workers, placement)

    def stop(self, job_id: str, reason: str) -> None:
        """Checkpoint and end the run (idempotent); see the module docstring.
        It resumes from that checkpoint when started again."""
        ref = self._refs.pop(job_id, None)
        if ref is None:
            return
        outcome = STOP_OUTCOMES.get(reason, "STOPPED")
        run_dir = self._run_dir(job_id)
        if not ray.wait([ref], timeout=0)[0] and run_dir is not None:
            request_stop(run_dir, outcome)
            ray.wait([ref], timeout=self.stop_grace_s)
        if not ray.wait([ref], timeout=0)[0]:
            log.warning("run %s did not stop within %.0f s; killing it (work since its "
                        "newest checkpoint is lost)", job_id, self.stop_grace_s)
            ray.cancel(ref, force=True)
            ray.wait([ref], timeout=30)  # the task ends (with TaskCancelledError)
        ledger = self._ledger()
        if any(r["run_id"] == job_id and r["outcome"] == "RUNNING" for r in ledger.runs()):
            ledger.close_abandoned_run(job_id, outcome=outcome)

    def poll(self, job_id: str) -> JobProgress:
        """running / finished (outcome from the JobResult) / failed / lost."""
        spent = self._ledger().run_cost_usd(job_id)
        ref = self._refs.get(job_id)
        if ref is None:
            return JobProgress(state="lost", spent_usd=spent, message="no live run")
        if not ray.wait([ref], timeout=0)[0]:
            return self._running(job_id, spent)
        try:
            result = ray.get(ref)
        except (ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError) as exc:
            self._refs.pop(job_id, None)
            return JobProgress(state="failed", node_lost=True, spent_usd=spent,
                               message=str(exc).splitlines()[0][:300])
        except Exception as exc:  # noqa: BLE001 - the run's own error, reported to the controller
            self._refs.pop(job_id, None)
            return JobProgress(state="failed", spent_usd=spent,
                               message=str(exc).splitlines()[0][:300])
        self._refs.pop(job_id, None)
        spent = self._ledger().run_cost_usd(job_id)
        if result.outcome not in FINISHED:
            return JobProgress(state="failed", spent_usd=spent, message=result.outcome)
        return JobProgress(state="finished", outcome=result.outcome, spent_usd=spent,
                           last_step=int(result.metrics.get("global_step", 0) or 0),
                           message=result.outcome)

    def _running(self, job_id: str, spent: float) -> JobProgress:
        """A live run's progress: step, when it was reported and the ETA come from the
        run's progress file (written at every report); without one (a URI storage, or
        before the first report) the open interval's last heartbeat dates the progress."""
        run_dir = self._run_dir(job_id)
        progress = read_progress(run_dir) if run_dir is not None else None
        if progress is not None and "global_step" in progress:
            return JobProgress(state="running", spent_usd=spent,
                               last_step=int(progress["global_step"]),
                               last_step_at=float(progress["reported_at"]),
                               eta_s=eta_s(progress))
        beats = [i["ended_at"] for i in self._ledger().intervals(job_id)
                 if i["outcome"] == "RUNNING"]
        return JobProgress(state="running", spent_usd=spent,
                           last_step_at=max(beats) if beats else None)
