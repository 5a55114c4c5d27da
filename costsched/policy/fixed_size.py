"""Shared by the fixed-size baselines: run jobs at the size the user asked for."""

from __future__ import annotations

from collections.abc import Sequence

from costsched.policy.packing import Capacity, place_jobs
from costsched.policy.snapshot import ClusterSnapshot, Decision, JobView


def fixed_size_decision(snapshot: ClusterSnapshot, ordered: Sequence[JobView]) -> Decision:
    """Start jobs in ``ordered`` order at their requested size while GPUs last.

    A job that does not fit is skipped and later, smaller jobs may take the
    GPUs (backfill); a job over its budget gets nothing.
    """
    capacity = Capacity.of(snapshot)
    targets: list[tuple[str, int]] = []
    for job in ordered:
        size = min(job.requested_gpus, job.max_gpus)
        if job.spent_usd < job.budget_usd and size <= capacity.room(job):
            targets.append((job.name, size))
            capacity.take(job, size)
    placements = place_jobs(targets, snapshot.nodes, snapshot.placements,
                            usable=snapshot.free_gpus(),
                            on_demand={job.name for job in ordered if job.on_demand})
    batch_sizes = {job.name: job.requested_batch_size for job in ordered if job.name in placements}
    return Decision(placements=placements, batch_sizes=batch_sizes)
