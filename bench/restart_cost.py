"""Restart cost by phase: shrink and grow a running job, beside cold starts of the same sizes.

    .venv/bin/python bench/restart_cost.py [--samples 6000] [--before]

On one local Ray with 2 emulated accelerator slots, through the scheduler's own
runner (:class:`~costsched.ray_layer.scheduler.runner.RayJobRunner`): a cold start
on 2 workers, a shrink to 1 (stop at a checkpoint, resume), a grow back to 2,
then a cold start on 1 worker of a second job. Each attempt's phases are the ones
the run and the runner measured (:mod:`costsched.goodput.restart`) and that the
scheduler plans with. Prints a table of seconds per phase and each restart's total
over the cold start of the same size. ``--before`` runs as every (re)start did
before its data phases were cut: the training split through Ray Data
(``COSTSCHED_IN_MEMORY_SPLIT_MB=0``) and the dataset prepared anew by each driver
(no dataset cache). Run both for the before/after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_jobs import quickstart_job

from costsched.goodput.restart import PHASES, total_s

SLOT = "bench_slot"


def wait_for_phases(runner, job_id: str, after: float | None, timeout_s: float = 300.0):
    """Poll until the job's attempt newer than ``after`` reports its phases."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        progress = runner.poll(job_id)
        if progress.state != "running":
            raise RuntimeError(f"{job_id} ended while waiting: {progress.state} "
                               f"{progress.message}")
        if progress.restart_phases and progress.attempt_at != after:
            return dict(progress.restart_phases), progress.attempt_at
        time.sleep(0.5)
    raise TimeoutError(f"{job_id}: no phases within {timeout_s:.0f} s")


def wait_for_steps(runner, job_id: str, steps: int, timeout_s: float = 300.0) -> None:
    """Poll until the job has reported ``steps`` more steps (so it has a checkpoint)."""
    deadline = time.monotonic() + timeout_s
    start = runner.poll(job_id).last_step
    while runner.poll(job_id).last_step < start + steps:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id}: fewer than {steps} steps in {timeout_s:.0f} s")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000, help="training examples")
    parser.add_argument("--before", action="store_true",
                        help="the split through Ray Data, no dataset cache (the old way)")
    args = parser.parse_args()
    if args.before:  # inherited by the local Ray's processes, started below
        os.environ["COSTSCHED_IN_MEMORY_SPLIT_MB"] = "0"
        os.environ["COSTSCHED_CACHE_DIR"] = os.devnull + "/no-cache"  # cannot be created

    import ray

    from costsched.cost.prices import load_catalog
    from costsched.ray_layer.cluster import ensure_ray
    from costsched.ray_layer.scheduler.runner import RayJobRunner

    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        changes = {"dataset": {"num_samples": args.samples},
                   "training": {"num_epochs": 200, "target_metric": None},
                   "checkpoint": {"interval_steps": 10},
                   "scaling": {"accelerator_resource": SLOT, "use_gpu": False,
                               "min_workers": 1, "max_workers": 2},
                   "cost": {"budget_usd": 100.0}}
        job = quickstart_job(work, "restart-bench", changes)
        ensure_ray(job, "local")
        catalog = load_catalog()
        runner = RayJobRunner(catalog, job.ledger_path, job.storage_path, stop_grace_s=120.0)
        rows: dict[str, dict[str, float]] = {}
        try:
            runner.start("grown", job, 2, {})
            rows["cold start, 2 workers"], attempt = wait_for_phases(runner, "grown", None)
            wait_for_steps(runner, "grown", 12)
            runner.resize("grown", 1, {})
            rows["shrink 2 -> 1"], attempt = wait_for_phases(runner, "grown", attempt)
            wait_for_steps(runner, "grown", 12)
            runner.resize("grown", 2, {})
            rows["grow 1 -> 2"], attempt = wait_for_phases(runner, "grown", attempt)
            runner.stop("grown", "cancelled")
            runner.start("cold", job, 1, {})
            rows["cold start, 1 worker"], _ = wait_for_phases(runner, "cold", None)
            runner.stop("cold", "cancelled")
        finally:
            ray.shutdown()

    width = max(map(len, rows)) + 2
    mode = ("before: split through Ray Data, no dataset cache" if args.before
            else "now: split through the object store, dataset cached")
    print(f"seconds per phase ({mode})")
    print("".ljust(width) + "".join(p.replace("_", " ").rjust(13) for p in PHASES)
          + "total".rjust(9))
    for name, phases in rows.items():
        print(name.ljust(width) + "".join(f"{phases.get(p, 0.0):13.1f}" for p in PHASES)
              + f"{total_s(phases):9.1f}")
    cold1, cold2 = total_s(rows["cold start, 1 worker"]), total_s(rows["cold start, 2 workers"])
    print(f"shrink / cold start of 1: x{total_s(rows['shrink 2 -> 1']) / cold1:.2f}")
    print(f"grow / cold start of 2:   x{total_s(rows['grow 1 -> 2']) / cold2:.2f}")
    restarts = [rows["shrink 2 -> 1"], rows["grow 1 -> 2"]]
    largest = max(PHASES, key=lambda p: sum(r.get(p, 0.0) for r in restarts))
    print(f"largest phase of the restarts: {largest.replace('_', ' ')}")
    print(f"bench wall time {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
