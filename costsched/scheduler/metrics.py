"""What the scheduler exports as metrics (pure): computed from status rows and nodes.

The Ray layer publishes these through ``ray.util.metrics`` (Prometheus names in
:data:`METRIC_HELP`); tests check the arithmetic here without Ray.

Per-job series (tag ``job_id``) are exported for active jobs only. Ray's metrics API
has no way to delete a series; a gauge series is exported for as long as it keeps
being set (see :mod:`costsched.ray_layer.scheduler.metrics`), so the one way an ended
job's series goes away is that it is no longer set: :func:`metric_series` lists what
to set, and the exporter sets exactly that, again and again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from costsched.scheduler.interfaces import JobStatus, NodeRecord
from costsched.scheduler.state import ACTIVE, RUNNING, WAITING

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


SCALARS = ("queue_length", "slots_allocated", "slots_idle", "usd_per_hour",
           "cluster_usd_per_hour", "alerts")
"""Metrics with one series each (no tags): fields of :class:`SchedulerMetrics`."""
PER_JOB = ("job_spent_usd", "job_restarts", "job_preemptions")
"""Metrics with one series per active job (tag ``job_id``)."""

Series = tuple[str, str | None]
"""One exported series: (metric name without the ``costsched_`` prefix, job id or None)."""


@dataclass(frozen=True, kw_only=True)
class SchedulerMetrics:
    """One sample of every metric; the per-job maps cover every job in the status."""

    queue_length: int
    slots_allocated: int
    slots_idle: int
    usd_per_hour: float
    cluster_usd_per_hour: float
    alerts: int
    job_spent_usd: Mapping[str, float]
    job_restarts: Mapping[str, int]
    job_preemptions: Mapping[str, int]
    active_jobs: frozenset[str]
    """Jobs not ended (queued, running, resizing or preempted): the only ones whose
    per-job series are exported."""


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
        active_jobs=frozenset(r.job_id for r in rows if r.state in ACTIVE),
    )


def metric_series(sample: SchedulerMetrics) -> dict[Series, float]:
    """Every series to export for ``sample``, with its value: one per scalar metric and
    one per (per-job metric, active job). A series not in here is not set, so an ended
    job's series stop being exported."""
    series: dict[Series, float] = {(name, None): float(getattr(sample, name))
                                   for name in SCALARS}
    for name in PER_JOB:
        for job_id, value in getattr(sample, name).items():
            if job_id in sample.active_jobs:
                series[(name, job_id)] = float(value)
    return series
