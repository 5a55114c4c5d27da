"""A finished sweep's serving figures, measured again on its trials' trained weights.

Reads the sweep's `results.csv` and each trial's newest checkpoint, measures every
trial's serving latency as the sweep does (round-robin, the fastest of rounds x
runs timed batches, one thread; no Ray), prices it with the sweep's
`objective.serving`, and prints the ranking by total dollars, `--repeats` times,
so the spread between repeats shows what the measurement can tell apart.

    python bench/serving_latency.py SWEEP.yaml --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.sweep.config import job_for, load_sweep  # noqa: E402
from costsched.sweep.outputs import with_serving  # noqa: E402
from costsched.sweep.trial_size import newest_checkpoint, serving_latencies_ms  # noqa: E402
from costsched.training.data import prepare  # noqa: E402

COLUMNS = ["trial_id", "config", "usd_to_target", "serving_latency_ms", "serving_usd",
           "total_usd"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-per-round", type=int, default=50)
    args = parser.parse_args(argv)
    catalog = load_catalog()
    sweep = load_sweep(args.sweep, catalog)
    serving = sweep.config.objective.serving
    if serving is None:
        print(f"{args.sweep}: no objective.serving to price", file=sys.stderr)
        return 2
    root = sweep.config.resolved_storage_path() / sweep.config.name
    frame = pd.read_csv(root / "outputs" / "results.csv")
    trials = {}
    for trial_id, config in zip(frame["trial_id"], frame["config"], strict=True):
        checkpoint = newest_checkpoint(root / "trials" / f"{sweep.config.name}-{trial_id}")
        if checkpoint is not None:
            trials[trial_id] = (job_for(sweep.base, json.loads(config), catalog), checkpoint)
    splits = prepare(sweep.base_job.dataset)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        for repeat in range(args.repeats):
            latency = serving_latencies_ms(trials, splits, batch_size=serving.batch_size,
                                           rounds=args.rounds,
                                           runs_per_round=args.runs_per_round)
            ranked = with_serving(frame, latency, serving, catalog)
            print(f"repeat {repeat + 1}")
            print(ranked[COLUMNS].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
