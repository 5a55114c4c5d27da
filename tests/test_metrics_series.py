"""Which metric series the scheduler exports, and for how long: an ended job's series
stop being set (Ray then drops them, having no delete), live ones are set again
between rounds so that they never lapse. No Ray session: gauges are recording fakes."""

from __future__ import annotations

import threading
import time

from costsched.scheduler.interfaces import JobStatus, NodeRecord
from costsched.scheduler.metrics import measure, metric_series


def status(job_id: str, state: str, *, spent: float = 0.0) -> JobStatus:
    return JobStatus(job_id=job_id, name=job_id.split("-")[0], state=state, priority=0,
                     workers=0, gpus=0, spent_usd=spent, budget_usd=10.0, usd_per_hour=0.0,
                     eta_s=None, restarts=0, preemptions=0, spot_restarts=0, failures=0,
                     alerts=())


NODES = [NodeRecord(node_id="n1", node_type="one", gpu_model="A10G", total_slots=4,
                    free_slots=4, usd_per_hour=1.0)]


def job_ids(series) -> set[str]:
    return {job_id for _, job_id in series if job_id is not None}


def test_only_jobs_that_have_not_ended_have_series():
    rows = [status("run-1", "RUNNING", spent=1.5), status("wait-2", "QUEUED"),
            status("pre-3", "PREEMPTED"), status("done-4", "COMPLETED", spent=3.0),
            status("gone-5", "CANCELLED"), status("broke-6", "BUDGET_EXHAUSTED")]
    series = metric_series(measure(rows, NODES))
    assert job_ids(series) == {"run-1", "wait-2", "pre-3"}
    assert series[("job_spent_usd", "run-1")] == 1.5
    assert series[("queue_length", None)] == 2.0


class RecordingGauge:
    """Stands in for ``ray.util.metrics.Gauge``: records every set, thread-safely."""

    made: list[RecordingGauge] = []

    def __init__(self, name: str, description: str = "", tag_keys: tuple = ()):
        self.name, self.tag_keys = name, tag_keys
        self.sets: list[tuple[float, str | None]] = []
        self.lock = threading.Lock()
        RecordingGauge.made.append(self)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        with self.lock:
            self.sets.append((value, (tags or {}).get("job_id")))

    def take(self) -> list[tuple[float, str | None]]:
        with self.lock:
            sets, self.sets = self.sets, []
        return sets


def exporter(refresh_s: float):
    from costsched.ray_layer.scheduler.metrics import MetricsExporter

    RecordingGauge.made = []
    made = MetricsExporter(refresh_s=refresh_s, gauge=RecordingGauge)
    return made, {g.name: g for g in RecordingGauge.made}


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_an_ended_jobs_series_is_never_set_again_and_live_ones_keep_being_set():
    metrics, gauges = exporter(refresh_s=0.02)
    spent = gauges["costsched_job_spent_usd"]
    queue = gauges["costsched_queue_length"]
    try:
        metrics.publish(measure([status("a-1", "RUNNING", spent=1.0),
                                 status("b-2", "RUNNING", spent=2.0)], NODES))
        assert {job for _, job in spent.take()} == {"a-1", "b-2"}
        metrics.publish(measure([status("a-1", "COMPLETED", spent=1.5),
                                 status("b-2", "RUNNING", spent=2.5)], NODES))
        queue.take()
        # No round runs now; the live series are set again on their own, several times
        # (Ray drops a series not set within two of its exports).
        assert wait_for(lambda: len(queue.sets) >= 3)
        after_end = spent.take()
        assert after_end and {job for _, job in after_end} == {"b-2"}
        assert {value for value, _ in after_end} == {2.5}
    finally:
        metrics.close()
    queue.take()
    time.sleep(0.1)
    assert queue.take() == []  # closed: nothing is set any more
