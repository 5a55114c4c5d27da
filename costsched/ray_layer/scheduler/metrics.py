"""Publishes :class:`~costsched.scheduler.metrics.SchedulerMetrics` through
``ray.util.metrics``: Ray exports them on each node's Prometheus endpoint
(``ray_``-prefixed, e.g. ``ray_costsched_queue_length``)."""

from __future__ import annotations

from ray.util.metrics import Gauge

from costsched.scheduler.metrics import METRIC_HELP, SchedulerMetrics

SCALARS = ("queue_length", "slots_allocated", "slots_idle", "usd_per_hour",
           "cluster_usd_per_hour", "alerts")
PER_JOB = ("job_spent_usd", "job_restarts", "job_preemptions")


class MetricsExporter:
    """One Gauge per metric; per-job gauges carry a ``job_id`` tag."""

    def __init__(self) -> None:
        self._gauges = {
            name: Gauge(f"costsched_{name}", description=METRIC_HELP[f"costsched_{name}"],
                        tag_keys=("job_id",) if name in PER_JOB else ())
            for name in SCALARS + PER_JOB
        }

    def publish(self, sample: SchedulerMetrics) -> None:
        for name in SCALARS:
            self._gauges[name].set(float(getattr(sample, name)))
        for name in PER_JOB:
            for job_id, value in getattr(sample, name).items():
                self._gauges[name].set(float(value), tags={"job_id": job_id})
