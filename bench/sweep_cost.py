"""Dollars to 0.95 validation accuracy on MNIST-1D: the fp32 baseline vs a cost sweep.

Runs the baseline recipe (configs/sweep_base.yaml: fp32, uncompressed, 2 CPU
workers, 20,000 samples) once, then the sweep of configs/sweep_mnist1d.yaml with
its budget set to ``--budget-multiple`` baseline runs and each trial capped at
one baseline run. Prints the baseline's dollars to target, the best trial's
dollars to target and accuracy, their ratio (target <= 0.5), and the sweep's
whole cost as a multiple of one baseline run (target <= 5).

    python bench/sweep_cost.py [--budget-multiple 4.5] [--trials 12]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.config.job import load_job_config  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.sweep.config import load_sweep  # noqa: E402
from costsched.training.data import prepare  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-multiple", type=float, default=4.5)
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()

    import ray

    from costsched.cost.ledger import Ledger
    from costsched.ray_layer.train.trainer import run_job
    from costsched.ray_layer.tune.driver import run_sweep

    tmp = Path(tempfile.mkdtemp(prefix="sweep-cost-"))
    base = yaml.safe_load((CONFIGS / "sweep_base.yaml").read_text())
    base.update(storage_path=str(tmp / "runs"), ledger_path=str(tmp / "baseline.db"))
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    job = load_job_config(tmp / "base.yaml")
    catalog = load_catalog()
    ray.init(resources={"cpu_slot": 2}, logging_level="ERROR")
    baseline = run_job(job, prepare(job.dataset), catalog=catalog, verbose=False,
                       ledger=Ledger(job.resolved_ledger_path(), catalog))
    base_to_target = baseline.metrics.get("usd_to_target")
    if base_to_target is None:
        print(f"baseline did not reach the target: {baseline.metrics.get('val_accuracy')}")
        return 1
    print(f"baseline: ${base_to_target:.6f} to target, ${baseline.cost_usd:.6f} for the run "
          f"(test accuracy {baseline.metrics['test_accuracy']:.4f})", flush=True)

    sweep = yaml.safe_load((CONFIGS / "sweep_mnist1d.yaml").read_text())
    sweep.update(base_job="base.yaml", storage_path=str(tmp / "sweeps"),
                 num_trials=args.trials, budget_usd=args.budget_multiple * baseline.cost_usd,
                 trial_budget_usd=baseline.cost_usd)
    sweep["scheduler"]["grace_usd"] = 0.25 * baseline.cost_usd
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    print(run_sweep(load_sweep(tmp / "sweep.yaml"), catalog, resume=False, address=None,
                    out_dir=str(tmp / "outputs")), flush=True)
    ray.shutdown()

    results = pd.read_csv(tmp / "outputs" / "results.csv")
    reached = results[results["reached_target"]]
    spent = results["cost_usd"].sum()
    print(f"\ntrials run: {len(results)}, reached the target: {len(reached)}, "
          f"stopped early: {(results['stop_reason'] == 'STOPPED_EARLY').sum()}")
    if not reached.empty:
        best = reached.iloc[0]
        print(f"best trial: ${best['usd_to_target']:.6f} to target, test accuracy "
              f"{best['test_accuracy']:.4f}, config {best['config']}")
        print(f"ratio best/baseline dollars to target: "
              f"{best['usd_to_target'] / base_to_target:.3f} (target <= 0.5)")
    print(f"sweep cost: ${spent:.6f} = {spent / baseline.cost_usd:.2f} baseline runs "
          f"(target <= 5; budget {args.budget_multiple:g})")
    print(f"outputs: {tmp / 'outputs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
