"""Control-plane latency: ``submit``, ``cancel`` and ``status`` while jobs are stopping.

On a local Ray with three emulated accelerator slots (``cpu_slot``), the real
scheduler actor runs three 1-worker quickstart jobs. Once each has taken steps,
all three are cancelled: their stops (checkpoint, then the run ending) are in
flight for several seconds. Meanwhile this process calls ``submit`` (a new job,
with a request id; then the same request again, which must return the same job),
``status`` and ``cancel`` (of the job it just submitted) in a loop and times each
call, as ``costsched`` does, through the actor.

Baseline, in the same command: the same loop before any stop, while the three
jobs train. The figures: p50 and p99 per call in each phase, their ratio, and
how many stops were in flight during the measured phase (target: p99 < 1 s).

    python bench/control_latency.py [--calls 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench_jobs import quickstart_job

from costsched.ray_layer.channel import progress as read_progress


def job_yaml(workdir: Path, name: str, epochs: int) -> str:
    quickstart_job(workdir, name, {
        "dataset": {"num_samples": 4000},
        "training": {"num_epochs": epochs, "target_metric": None},
        "scaling": {"min_workers": 1, "max_workers": 1},
        "checkpoint": {"interval_steps": 5}})
    return (workdir / f"{name}.yaml").read_text()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def measure(service, root: Path, calls: int) -> dict[str, list[float]]:
    """Time ``calls`` rounds of submit (twice, same request id), status and cancel."""
    import ray

    times: dict[str, list[float]] = {"submit": [], "status": [], "cancel": []}
    text = job_yaml(root, "probe", epochs=1)
    in_flight = []
    for _ in range(calls):
        request = uuid.uuid4().hex
        took, first = timed(lambda r=request: ray.get(service.submit.remote(text, {}, "probe",
                                                                           r)))
        times["submit"].append(took)
        took, again = timed(lambda r=request: ray.get(service.submit.remote(text, {}, "probe",
                                                                           r)))
        times["submit"].append(took)
        assert again["job_id"] == first["job_id"], (first, again)
        took, status = timed(lambda: ray.get(service.status.remote()))
        times["status"].append(took)
        in_flight.append(status["service"]["stops_in_flight"])
        took, _ = timed(lambda j=first["job_id"]: ray.get(service.cancel.remote(j)))
        times["cancel"].append(took)
    times["in_flight"] = in_flight
    return times


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30, help="rounds of calls per phase")
    args = parser.parse_args()

    import ray

    from costsched.config.scheduler import SchedulerConfig
    from costsched.ray_layer.scheduler.service import NAMESPACE, start_service

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ray.init(num_cpus=3, resources={"cpu_slot": 3}, namespace=NAMESPACE,
                 logging_level="ERROR", log_to_driver=False)
        config = SchedulerConfig(policy="fifo", round_s=2.0, restart_s=5.0,
                                 state_path=str(root / "scheduler.db"),
                                 ledger_path=str(root / "ledger.db"),
                                 storage_path=str(root / "runs"), stop_grace_s=60.0,
                                 accelerator_resource="cpu_slot")
        service = start_service(config)
        ray.get(service.info.remote())
        jobs = [ray.get(service.submit.remote(job_yaml(root, f"train{i}", 200), {}))["job_id"]
                for i in range(3)]
        wait_for(lambda: all((read_progress(j) or {}).get("global_step", 0) > 5 for j in jobs),
                 400, "steps from all three jobs")

        baseline = measure(service, root, args.calls)
        cancelled_at = time.perf_counter()
        for job in jobs:
            ray.get(service.cancel.remote(job))
        cancel_s = time.perf_counter() - cancelled_at
        busy = measure(service, root, args.calls)
        measured_s = time.perf_counter() - cancelled_at
        stopped_s = wait_for(lambda: not ray.get(service.status.remote())["service"][
            "stops_in_flight"] and time.perf_counter() - cancelled_at, 200, "stops ending")
        ray.get(service.shutdown.remote())

    print(f"three cancels of training jobs returned in {cancel_s:.2f} s together; the "
          f"measured phase took {measured_s:.1f} s; all stops ended {stopped_s:.1f} s after")
    print(f"stops in flight at each status call while measured: "
          f"{busy['in_flight']} (idle phase: max {max(baseline['in_flight'])})")
    print(f"{'call':<8}{'p50 idle':>10}{'p99 idle':>10}{'p50 stopping':>14}"
          f"{'p99 stopping':>14}{'p99 ratio':>11}")
    for call in ("submit", "status", "cancel"):
        idle, stopping = baseline[call], busy[call]
        print(f"{call:<8}{statistics.median(idle):>10.3f}{p99(idle):>10.3f}"
              f"{statistics.median(stopping):>14.3f}{p99(stopping):>14.3f}"
              f"{p99(stopping) / p99(idle):>11.2f}")
    worst = max(p99(busy[c]) for c in busy)
    print(f"p99 while stopping: {worst:.3f} s ({'PASS' if worst < 1.0 else 'FAIL'}: target < 1 s)")
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
