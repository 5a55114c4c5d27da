"""Runs the scheduler's jobs on Ray: one remote driver task per job, calling ``run_job``.

Implements :class:`costsched.scheduler.interfaces.JobRunner`. Each job's run id
is its job id, so a restart (after a preemption, a resize, a failure or a
controller restart) resumes the same run from its newest checkpoint, and the
ledger keeps charging one run.

Stopping is ``ray.cancel(ref, force=True)``: the driver task dies and the Train
controller and workers it owns die with it. Work since the newest checkpoint is
lost; the next ``start`` resumes from that checkpoint. The ledger's open
interval is closed at its last heartbeat (``Ledger.close_abandoned_run``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import ray

from costsched.job_config import JobConfig
from costsched.ledger import Ledger
from costsched.pricing import PriceCatalog
from costsched.scheduler.interfaces import JobProgress, RunHandle

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

    def __init__(self, catalog: PriceCatalog, ledger_path: str, storage_path: str):
        self.catalog = catalog
        self.ledger_path = ledger_path
        self.storage_path = storage_path
        self._refs: dict[str, ray.ObjectRef] = {}
        self._configs: dict[str, JobConfig] = {}

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
        """Kill the run (idempotent); it resumes from its newest checkpoint when restarted."""
        ref = self._refs.pop(job_id, None)
        if ref is None:
            return
        if not ray.wait([ref], timeout=0)[0]:
            ray.cancel(ref, force=True)
            ray.wait([ref], timeout=30)  # the task ends (with TaskCancelledError)
        ledger = self._ledger()
        if any(r["run_id"] == job_id and r["outcome"] == "RUNNING" for r in ledger.runs()):
            ledger.close_abandoned_run(job_id, outcome=STOP_OUTCOMES.get(reason, "STOPPED"))

    def poll(self, job_id: str) -> JobProgress:
        """running / finished (outcome from the JobResult) / failed / lost."""
        spent = self._ledger().run_cost_usd(job_id)
        ref = self._refs.get(job_id)
        if ref is None:
            return JobProgress(state="lost", spent_usd=spent, message="no live run")
        if not ray.wait([ref], timeout=0)[0]:
            # Every training report heartbeats the open interval: its end is the last
            # sign of progress (the ledger keeps no step count), which feeds stall alerts.
            beats = [i["ended_at"] for i in self._ledger().intervals(job_id)
                     if i["outcome"] == "RUNNING"]
            return JobProgress(state="running", spent_usd=spent,
                               last_step_at=max(beats) if beats else None)
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
