"""Shared by the fixed-size baselines: run jobs at the size the user asked for, or at
the largest size that fits when the user allowed a smaller one."""

from __future__ import annotations

from collections.abc import Sequence

from costsched.policy.packing import Capacity, place_jobs
from costsched.policy.snapshot import ClusterSnapshot, Decision, JobView, num_gpus


def fitting_size(job: JobView, room: int, held: int) -> int:
    """GPUs ``job`` runs on when ``room`` GPUs are left: the largest whole number of
    workers between its min and its size (what it holds, else what it asked for), or
    0 when even its min does not fit."""
    asked = min(job.requested_gpus, job.max_gpus)
    least = min(job.min_gpus, asked)
    size = held if least <= held <= asked else asked
    step = job.gpus_per_worker
    size = min(size, room) // step * step
    return size if size >= least else 0


def fixed_size_decision(snapshot: ClusterSnapshot, ordered: Sequence[JobView]) -> Decision:
    """Start jobs in ``ordered`` order at their requested size while GPUs last.

    A job whose size does not fit starts at the largest size that does, down to its
    min (a rigid job, min = requested, does not start); a running job keeps its size,
    shrinking only when that no longer fits. A job that does not fit at all is
    skipped and later, smaller jobs may take the GPUs (backfill); a job over its
    budget gets nothing.
    """
    capacity = Capacity.of(snapshot)
    targets: list[tuple[str, int]] = []
    for job in ordered:
        held = num_gpus(snapshot.placements.get(job.name))
        size = fitting_size(job, capacity.room(job), held)
        if job.spent_usd < job.budget_usd and size:
            targets.append((job.name, size))
            capacity.take(job, size)
    placements = place_jobs(targets, snapshot.nodes, snapshot.placements,
                            usable=snapshot.free_gpus(),
                            on_demand={job.name for job in ordered if job.on_demand})
    batch_sizes = {job.name: job.requested_batch_size for job in ordered if job.name in placements}
    return Decision(placements=placements, batch_sizes=batch_sizes)
