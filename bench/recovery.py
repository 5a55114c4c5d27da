"""Recovery drill: SIGKILL a training worker mid-run and time the way back.

Prints the time from the kill to the first optimiser step after the resume
(target <= 10 s), the step the run resumed from against the newest checkpoint
on disk at the kill, and the steps lost (target <= one checkpoint interval).
Steps done at the kill are estimated from the checkpoint's age and the run's
measured step rate.

    python bench/recovery.py [--interval 40] [--samples 8000] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_jobs import quickstart_job

from costsched.cost.prices import load_catalog
from costsched.training.data import prepare
from costsched.training.state import checkpoint_step, newest_checkpoint_dir


def drill_job(workdir: Path, interval: int, samples: int, epochs: int):
    return quickstart_job(workdir, "bench-recovery", {
        "dataset": {"num_samples": samples},
        "training": {"num_epochs": epochs, "target_metric": None},
        "checkpoint": {"interval_steps": interval},
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=int, default=40, help="checkpoint interval, steps")
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    import ray

    from costsched.cost.ledger import Ledger
    from costsched.ray_layer.train.trainer import run_job
    from tests.support.faults import kill_train_worker, wait_for_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        job = drill_job(Path(tmp), args.interval, args.samples, args.epochs)
        splits = prepare(job.dataset)
        catalog = load_catalog()
        ray.init(resources={job.scaling.accelerator_resource: job.scaling.max_workers},
                 logging_level="ERROR")
        run_id = "recovery-drill"
        run_dir = Path(job.resolved_storage_path()) / run_id
        drill: dict[str, float] = {}

        def kill() -> None:
            wait_for_checkpoint(run_dir, 2 * args.interval, 300)
            time.sleep(0.5)
            newest = newest_checkpoint_dir(run_dir)  # the newest when the worker dies
            drill["ckpt_step"] = checkpoint_step(newest)
            drill["ckpt_mtime"] = os.path.getmtime(newest / "state.pt")
            drill["killed_at"] = time.time()
            kill_train_worker()

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
        ledger = Ledger(job.resolved_ledger_path(), catalog)
        result = run_job(job, splits, catalog=catalog, ledger=ledger, run_id=run_id,
                         verbose=False)
        intervals = ledger.intervals(run_id)
        ray.shutdown()
    m = result.metrics
    history = m["history"]
    steps_per_s = history[-1]["samples_per_s"] / job.training.global_batch_size
    est_step_at_kill = drill["ckpt_step"] + (drill["killed_at"] - drill["ckpt_mtime"]) * steps_per_s
    print(f"killed a worker at step ~{est_step_at_kill:.0f} (newest checkpoint: step "
          f"{drill['ckpt_step']:.0f}); resumed from step {m['resumed_from_step']}")
    print(f"kill -> first step after resume: {m['first_step_at'] - drill['killed_at']:.1f} s "
          "(target <= 10 s)")
    print(f"steps lost: ~{est_step_at_kill - m['resumed_from_step']:.0f} "
          f"(checkpoint interval {args.interval}; target <= interval)")
    print(f"ledger: {len(intervals)} intervals {[i['outcome'] for i in intervals]}, "
          f"lost {intervals[0]['lost_s']:.1f} s = ${intervals[0]['lost_usd']:.6f}; "
          f"run total ${result.cost_usd:.6f}; final test accuracy {m['test_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
