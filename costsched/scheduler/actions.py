"""From a policy's decision to the actions that carry it out (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from costsched.policy.snapshot import Decision
from costsched.scheduler.interfaces import Action
from costsched.scheduler.state import RUNNING, JobRecord

ACTION_ORDER = {"preempt": 0, "resize": 1, "resume": 2, "start": 3}
"""Preemptions and resizes first, so the slots they free are free before jobs start."""


def plan_actions(jobs: Sequence[JobRecord], gpus_per_worker: Mapping[str, int],
                 decision: Decision, reject: Callable[[str], None]) -> list[Action]:
    """The actions that move ``jobs``' allocations to ``decision``. A placement that is
    not a whole number of workers within the job's range is not executed: the job gets
    nothing this round and ``reject`` is told why."""
    actions = []
    for job in jobs:
        per_worker = gpus_per_worker[job.job_id]
        placement = {n: c for n, c in decision.placements.get(job.job_id, {}).items() if c}
        gpus = sum(placement.values())
        workers = gpus // per_worker
        if gpus % per_worker or (workers and workers < job.min_workers):
            reject(f"job {job.job_id}: {gpus} GPUs is not a whole number of {per_worker}-GPU "
                   f"workers in {job.min_workers}..{job.max_workers}; the job gets none "
                   "this round")
            workers, placement = 0, {}
        held = job.workers if job.state in RUNNING else 0
        if held == workers:
            continue
        if workers == 0:
            kind = "preempt"
        elif held:
            kind = "resize"
        else:
            kind = "resume" if job.started_at is not None else "start"
        actions.append(Action(kind=kind, job_id=job.job_id, num_workers=workers,
                              placement=placement, detail=f"{held} -> {workers} workers"))
    return sorted(actions, key=lambda a: ACTION_ORDER[a.kind])
