"""What the scheduler exports as metrics (pure): computed from status rows and nodes.

The Ray layer publishes these through ``ray.util.metrics`` (Prometheus names in
:data:`METRIC_HELP`); tests check the arithmetic here without Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from costsched.scheduler.interfaces import JobStatus, NodeRecord
from costsched.scheduler.state import RUNNING, WAITING

METRIC_HELP: dict[str, str] = {
    "costsched_queue_length": "Jobs waiting for accelerators (queued or preempted).",
    "costsched_slots_allocated": "Accelerator slots held by running jobs.",
    "costsched_slots_idle": "Accelerator slots on alive nodes that no job holds.",
    "costsched_usd_per_hour": "Dollars per hour the running jobs burn now.",
    "costsched_cluster_usd_per_hour": "Dollars per hour the alive nodes cost now.",
    "costsched_job_spent_usd": "Dollars a job has spent so far (tag job_id).",
    "costsched_job_restarts": "Restarts of a job from its checkpoint, any cause (tag job_id).",
    "costsched_job_preemptions": "Times a job was preempted (tag job_id).",
    "costsched_alerts": "Active alerts (stall or budget burn).",
}


@dataclass(frozen=True, kw_only=True)
class SchedulerMetrics:
    """One sample of every metric."""

    queue_length: int
    slots_allocated: int
    slots_idle: int
    usd_per_hour: float
    cluster_usd_per_hour: float
    alerts: int
    job_spent_usd: Mapping[str, float]
    job_restarts: Mapping[str, int]
    job_preemptions: Mapping[str, int]


def measure(rows: Sequence[JobStatus], nodes: Sequence[NodeRecord]) -> SchedulerMetrics:
    """Metrics from ``costsched status`` rows and the cluster's nodes:
    idle = sum(alive nodes' slots) - allocated (never below 0)."""
    running = [r for r in rows if r.state in RUNNING]
    allocated = sum(r.gpus for r in running)
    alive = [n for n in nodes if n.alive]
    return SchedulerMetrics(
        queue_length=sum(r.state in WAITING for r in rows),
        slots_allocated=allocated,
        slots_idle=max(sum(n.total_slots for n in alive) - allocated, 0),
        usd_per_hour=sum(r.usd_per_hour for r in running),
        cluster_usd_per_hour=sum(n.usd_per_hour for n in alive),
        alerts=sum(len(r.alerts) for r in rows),
        job_spent_usd={r.job_id: r.spent_usd for r in rows},
        job_restarts={r.job_id: r.restarts for r in rows},
        job_preemptions={r.job_id: r.preemptions for r in rows},
    )
