"""How well Pollux's fitted step-time model predicts configurations it was not fitted on.

    .venv/bin/python bench/fitted_model.py [--profiles DIR]

For each app of the Pollux measurements (``DIR/profiles/APP/placements.csv``): fit
on one replica at every per-GPU batch size and on two replicas (one node, and two
nodes) at every other batch size; predict two replicas at the batch sizes left
out, and four replicas on one node (whose retrogression the fit never saw) at
every batch size. Prints the median and max relative error of the step time.

Then, for the prior's sync ratios (:data:`~costsched.goodput.throughput.DEFAULT_PRIOR`),
the fit to every measured placement of each app: the all-reduce across nodes over
within one (alpha_n / alpha_r), and each retrogression per replica past two over its
all-reduce (beta_r / alpha_r within a node, beta_n / alpha_n across nodes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from costsched.goodput.profile import read_placements
from costsched.goodput.throughput import ThroughputPoint, fit_throughput, predict_step_time_s
from costsched.sim.profiles import pollux_dir


def split(points: list[ThroughputPoint]) -> dict[str, list[ThroughputPoint]]:
    """Fit set and the held-out sets: 2 replicas at other batch sizes, 4 on one node."""
    sizes = sorted({p.local_bsz for p in points})
    fit_sizes = set(sizes[::2])
    parts: dict[str, list[ThroughputPoint]] = {"fit": [], "2 replicas, other bsz": [],
                                               "4 replicas, 1 node": []}
    for p in points:
        if p.num_replicas == 1 or (p.num_replicas == 2 and p.local_bsz in fit_sizes):
            parts["fit"].append(p)
        elif p.num_replicas == 2:
            parts["2 replicas, other bsz"].append(p)
        elif p.placement == (4,):
            parts["4 replicas, 1 node"].append(p)
    return parts


def relative_errors(params, points: list[ThroughputPoint]) -> np.ndarray:
    predicted = np.array([predict_step_time_s(params, p.num_nodes, p.num_replicas,
                                              p.local_bsz, p.accum_steps) for p in points])
    measured = np.array([p.step_time_s for p in points])
    return np.abs(predicted / measured - 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", help="Pollux data folder (default: ../shared/data/pollux)")
    args = parser.parse_args(argv)
    folder = pollux_dir(args.profiles) / "profiles"
    apps = sorted(p for p in folder.glob("*") if (p / "placements.csv").is_file()) \
        if folder.is_dir() else []
    if not apps:
        print(f"skipped: no Pollux profiles at {folder} (pass --profiles DIR)")
        return 0
    print(f"{'app':12} {'held out':22} {'points':>6} {'median':>7} {'max':>7}  fit")
    for app in apps:
        parts = split(read_placements(app / "placements.csv"))
        start = time.perf_counter()
        params = fit_throughput(parts.pop("fit"))
        took = time.perf_counter() - start
        parts["all held out"] = [p for held in parts.values() for p in held]
        for label, held in parts.items():
            errors = relative_errors(params, held)
            print(f"{app.name:12} {label:22} {len(held):6d} {np.median(errors):7.1%} "
                  f"{errors.max():7.1%}  {took:.2f} s")
    print(f"\n{'app':12} {'alpha_r':>8} {'alpha_n/r':>9} {'beta_r/a_r':>10} {'beta_n/a_n':>10}"
          "  (fit to every placement)")
    for app in apps:
        q = fit_throughput(read_placements(app / "placements.csv"))
        print(f"{app.name:12} {q.alpha_r:8.4f} {q.alpha_n / q.alpha_r:9.2f} "
              f"{q.beta_r / q.alpha_r:10.1%} {q.beta_n / q.alpha_n:10.1%}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
