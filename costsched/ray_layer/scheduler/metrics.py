"""Publishes :class:`~costsched.scheduler.metrics.SchedulerMetrics` through
``ray.util.metrics``: Ray exports them on each node's Prometheus endpoint
(``ray_``-prefixed, e.g. ``ray_costsched_queue_length``).

Ray has no call that deletes a series. What it does instead (Ray 2.60, with its
default OpenTelemetry metrics): the process that sets a gauge sends the node's agent
only the series set since its previous export (one every ``metrics_report_interval_ms``,
10 s by default), and the agent drops a series that has not come for two exports
(``ray/_private/telemetry/open_telemetry_metric_recorder.py``, the gauge TTL). So a
series lives exactly as long as it is set again within each export. This exporter
keeps the latest sample and sets its series (:func:`metric_series`: the scalars and
the active jobs' series) every ``refresh_s`` from a thread, between rounds too; an
ended job's series is no longer set and leaves the endpoint about two exports later.
(``RAY_enable_open_telemetry=0`` selects Ray's legacy OpenCensus path, which keeps a
gauge's last value until the process exits; there ended jobs' series stay.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.util.metrics import Gauge

from costsched.scheduler.metrics import (
    METRIC_HELP,
    PER_JOB,
    SCALARS,
    SchedulerMetrics,
    Series,
    metric_series,
)

log = logging.getLogger(__name__)

DEFAULT_REPORT_INTERVAL_MS = 10_000
"""Ray's default ``metrics_report_interval_ms``."""


def refresh_interval_s() -> float:
    """Half of Ray's metrics export interval (never under Ray's own 1 s floor), so every
    export finds each live series set since the one before."""
    try:
        interval_ms = ray._config.metrics_report_interval_ms()
    except Exception:  # noqa: BLE001 - a private API: assume Ray's default
        interval_ms = DEFAULT_REPORT_INTERVAL_MS
    return max(interval_ms, 1000) / 2000.0


class MetricsExporter:
    """One Gauge per metric (per-job gauges carry a ``job_id`` tag), the latest sample's
    series set on :meth:`publish` and again every ``refresh_s`` (default: half Ray's
    export interval) until :meth:`close`. ``gauge`` makes the gauges: Ray's ``Gauge``
    unless given (tests give a recording fake)."""

    def __init__(self, *, refresh_s: float | None = None,
                 gauge: Callable[..., Any] | None = None) -> None:
        make = gauge or Gauge
        self._gauges = {
            name: make(f"costsched_{name}", description=METRIC_HELP[f"costsched_{name}"],
                        tag_keys=("job_id",) if name in PER_JOB else ())
            for name in SCALARS + PER_JOB
        }
        self._series: dict[Series, float] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._refresh_s = refresh_interval_s() if refresh_s is None else refresh_s
        self._thread = threading.Thread(target=self._refresh_loop, name="metrics-refresh",
                                        daemon=True)
        self._thread.start()

    def publish(self, sample: SchedulerMetrics) -> None:
        """Export ``sample`` from now on, in place of the previous one."""
        with self._lock:
            self._series = metric_series(sample)
        self.refresh()

    def refresh(self) -> None:
        """Set every series of the latest sample (and nothing else)."""
        with self._lock:
            series = dict(self._series)
        for (name, job_id), value in series.items():
            self._gauges[name].set(value, tags=None if job_id is None else {"job_id": job_id})

    def close(self) -> None:
        """Stop setting series; Ray drops them after its gauge TTL."""
        self._closed.set()
        self._thread.join(timeout=5.0)

    def _refresh_loop(self) -> None:
        while not self._closed.wait(self._refresh_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - metrics must never stop the scheduler
                log.warning("setting scheduler metrics failed", exc_info=True)
