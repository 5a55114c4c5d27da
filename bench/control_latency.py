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

    python bench/control_latency.py [--cycles 3]
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


def measure(service, text: str, *, rounds: int | None) -> dict[str, list[float]]:
    """Time rounds of submit (twice, same request id), status and cancel: ``rounds`` of
    them, or (None) as long as stops are in flight, keeping only those rounds."""
    import ray

    times: dict[str, list[float]] = {"submit": [], "status": [], "cancel": [],
                                     "in_flight": []}
    done = 0
    while rounds is None or done < rounds:
        request = uuid.uuid4().hex
        round_times = {}
        took, first = timed(lambda r=request: ray.get(service.submit.remote(text, {}, "probe",
                                                                           r)))
        took2, again = timed(lambda r=request: ray.get(service.submit.remote(text, {}, "probe",
                                                                            r)))
        assert again["job_id"] == first["job_id"], (first, again)
        round_times["submit"] = [took, took2]
        took, status = timed(lambda: ray.get(service.status.remote()))
        round_times["status"] = [took]
        took, _ = timed(lambda j=first["job_id"]: ray.get(service.cancel.remote(j)))
        round_times["cancel"] = [took]
        in_flight = status["service"]["stops_in_flight"]
        if rounds is None and not in_flight:
            return times
        for call, values in round_times.items():
            times[call] += values
        times["in_flight"].append(in_flight)
        done += 1
    return times


def p99(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.99 * len(values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3,
                        help="times three jobs are started, then cancelled together")
    args = parser.parse_args()

    import ray

    from costsched.config.scheduler import SchedulerConfig
    from costsched.ray_layer.scheduler.service import NAMESPACE, start_service

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ray.init(address="local", num_cpus=3, resources={"cpu_slot": 3}, namespace=NAMESPACE,
                 logging_level="ERROR", log_to_driver=False)
        config = SchedulerConfig(policy="fifo", round_s=2.0, restart_s=5.0,
                                 state_path=str(root / "scheduler.db"),
                                 ledger_path=str(root / "ledger.db"),
                                 storage_path=str(root / "runs"), stop_grace_s=60.0,
                                 accelerator_resource="cpu_slot")
        service = start_service(config)
        ray.get(service.info.remote())
        probe = job_yaml(root, "probe", epochs=1)
        calls = ("submit", "status", "cancel", "in_flight")
        baseline = {c: [] for c in calls}
        busy = {c: [] for c in calls}
        stop_s = []
        for cycle in range(args.cycles):
            jobs = [ray.get(service.submit.remote(job_yaml(root, f"train{cycle}{i}", 200),
                                                  {}))["job_id"] for i in range(3)]
            wait_for(lambda js=jobs: all((read_progress(j) or {}).get("global_step", 0) > 5
                                         for j in js), 400, "steps from all three jobs")
            for call, values in measure(service, probe, rounds=10).items():
                baseline[call] += values
            cancelled_at = time.perf_counter()
            for job in jobs:
                ray.get(service.cancel.remote(job))
            for call, values in measure(service, probe, rounds=None).items():
                busy[call] += values
            stop_s.append(time.perf_counter() - cancelled_at)
        ray.get(service.shutdown.remote())

    print(f"{args.cycles} cycles of three training jobs cancelled together; their stops were "
          f"in flight for {', '.join(f'{s:.1f}' for s in stop_s)} s; "
          f"{len(busy['status'])} rounds of calls made meanwhile, with "
          f"{min(busy['in_flight'], default=0)}-{max(busy['in_flight'], default=0)} stops "
          f"in flight at each (idle phase: {len(baseline['status'])} rounds, none)")
    print(f"{'call':<8}{'p50 idle':>10}{'p99 idle':>10}{'p50 stopping':>14}"
          f"{'p99 stopping':>14}{'p99 ratio':>11}")
    for call in ("submit", "status", "cancel"):
        idle, stopping = baseline[call], busy[call]
        print(f"{call:<8}{statistics.median(idle):>10.3f}{p99(idle):>10.3f}"
              f"{statistics.median(stopping):>14.3f}{p99(stopping):>14.3f}"
              f"{p99(stopping) / p99(idle):>11.2f}")
    worst = max(p99(busy[c]) for c in ("submit", "status", "cancel"))
    print(f"p99 while stopping: {worst:.3f} s ({'PASS' if worst < 1.0 else 'FAIL'}: target < 1 s)")
    return 0 if worst < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
