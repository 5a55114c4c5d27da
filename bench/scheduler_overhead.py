"""Scheduler overhead: how long the live scheduler takes to put a job to work.

On a local Ray with two emulated accelerator slots (``cpu_slot``), the real
scheduler actor (policy cost-aware, a round every ``--round-s``) and the quickstart
job on 4,000 samples (an elastic 1..2-worker job of 80 epochs, stopped once
measured, and a 1-worker newcomer of 5 epochs):

1. submit -> first training step, on an idle cluster;
2. resize decision -> first training step at the new size: the job runs on 2
   workers, a higher-priority 1-worker job arrives, the policy shrinks the
   first to 1 worker (checkpoint, restart, resume) while the newcomer starts
   beside it; when the newcomer ends, the policy grows it back to 2 workers,
   with nothing else starting.

Baseline, in the same command: ``run_job`` called directly (no scheduler),
start -> first step, on 2 and on 1 workers. Each scheduler figure is printed
beside its baseline and as a ratio.

    python bench/scheduler_overhead.py [--round-s 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_jobs import quickstart_job

from costsched.ray_layer.channel import progress as read_progress


def job_yaml(workdir: Path, name: str, *, min_workers: int, max_workers: int,
             priority: int = 0, epochs: int = 20) -> str:
    """The quickstart job on 4,000 samples, as the YAML text a user would submit."""
    quickstart_job(workdir, name, {
        "dataset": {"num_samples": 4000},
        "training": {"num_epochs": epochs, "target_metric": None},
        "scaling": {"min_workers": min_workers, "max_workers": max_workers},
        "checkpoint": {"interval_steps": 5}, "cost": {"priority": priority}})
    return (workdir / f"{name}.yaml").read_text()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


def first_step_at(run_id: str, *, world_size: int, after: float) -> float | None:
    """When the attempt running on ``world_size`` workers, started after ``after``,
    took its first step (from the run's progress in its channel)."""
    progress = read_progress(run_id) or {}
    first = float(progress.get("first_step_at", -1.0))
    if progress.get("world_size") == world_size and first > after:
        return first
    return None


def baseline(workdir: Path, workers: int) -> float:
    """Seconds from calling run_job to its first step, without the scheduler."""
    from costsched.cost.ledger import Ledger
    from costsched.cost.prices import load_catalog
    from costsched.ray_layer.train.trainer import run_job
    from costsched.training.data import prepare

    job = quickstart_job(workdir, f"direct-{workers}", {
        "dataset": {"num_samples": 4000},
        "training": {"num_epochs": 1, "target_metric": None},
        "scaling": {"min_workers": workers, "max_workers": workers},
        "checkpoint": {"interval_steps": 5}})
    catalog = load_catalog()
    started = time.time()
    result = run_job(job, prepare(job.dataset), catalog=catalog,
                     ledger=Ledger(job.resolved_ledger_path(), catalog), verbose=False)
    return float(result.metrics["first_step_at"]) - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-s", type=float, default=2.0, help="seconds between rounds")
    args = parser.parse_args()

    import ray

    from costsched.config.scheduler import SchedulerConfig
    from costsched.ray_layer.scheduler.service import NAMESPACE, start_service

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ray.init(address="local", num_cpus=2, resources={"cpu_slot": 2}, namespace=NAMESPACE,
                 logging_level="ERROR", log_to_driver=False)
        direct_2 = baseline(root, 2)
        direct_1 = baseline(root, 1)
        config = SchedulerConfig(policy="cost-aware", round_s=args.round_s, restart_s=5.0,
                                 state_path=str(root / "scheduler.db"),
                                 ledger_path=str(root / "ledger.db"),
                                 storage_path=str(root / "runs"), stop_grace_s=60.0,
                                 accelerator_resource="cpu_slot")
        service = start_service(config)
        ray.get(service.info.remote())

        submitted = time.time()
        elastic = job_yaml(root, "elastic", min_workers=1, max_workers=2, epochs=80)
        first = ray.get(service.submit.remote(elastic, {}))["job_id"]
        stepped = wait_for(lambda: first_step_at(first, world_size=2, after=submitted),
                           300, "first step")
        submit_to_step = stepped - submitted

        ray.get(service.submit.remote(job_yaml(root, "urgent", min_workers=1, max_workers=1,
                                               priority=5, epochs=5), {}))

        def resize_decision(nth: int) -> float | None:
            events = ray.get(service.logs.remote(first))["events"]
            resizes = [e["at"] for e in events if e["kind"] == "resizing"]
            return resizes[nth] if len(resizes) > nth else None

        decided = wait_for(lambda: resize_decision(0), 300, "resize decision")
        resized = wait_for(lambda: first_step_at(first, world_size=1, after=decided),
                           300, "first step after the resize")
        resize_to_step = resized - decided
        from costsched.cost.ledger import Ledger
        from costsched.cost.prices import load_catalog

        stopped = min(i["ended_at"] for i in Ledger(root / "ledger.db", load_catalog())
                      .intervals(first) if i["outcome"] != "RUNNING")
        # The urgent job ends; the policy grows the first job back to 2 workers, with
        # nothing else starting beside it.
        grown_at = wait_for(lambda: resize_decision(1), 600, "resize back to 2 workers")
        grown = wait_for(lambda: first_step_at(first, world_size=2, after=grown_at),
                         300, "first step after growing")
        ray.get(service.shutdown.remote())
        ray.shutdown()

    print(f"submit -> first step (idle cluster, 2 workers): {submit_to_step:6.1f} s   "
          f"direct run_job: {direct_2:6.1f} s   ratio {submit_to_step / direct_2:.2f}")
    print(f"resize decision -> first step at 1 worker:      {resize_to_step:6.1f} s   "
          f"direct run_job: {direct_1:6.1f} s   ratio {resize_to_step / direct_1:.2f}")
    print(f"  of which: decision -> old run checkpointed and ended {stopped - decided:5.1f} s, "
          f"ended -> first step at the new size {resized - stopped:5.1f} s")
    print(f"resize decision -> first step at 2 workers (alone): {grown - grown_at:5.1f} s   "
          f"direct run_job: {direct_2:6.1f} s   ratio {(grown - grown_at) / direct_2:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
