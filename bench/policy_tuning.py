"""Mean JCT of cost-aware (with given constants) against published Pollux, per workload.

    python bench/policy_tuning.py [--oracle] [--loads 0.5 1.0] [--workloads 1 2 3 4]
                                  [--set service_power=0.5 ...] [--explore-factor 2]
                                  [--first-measure-s 10] [--share-measurements]
                                  [--hide-remaining-work | --remaining-work-while-running]

The constants of ``CostAwarePolicy`` were tuned with this script on workloads 1-4 of
``../shared/data/pollux`` at loads 0.5 and 1.0 only (see the README), and so were
the learner's exploration factor and the simulated jobs' first measurement (the two
options). Runs one
simulation at a time; prints one line per run and the mean ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from costsched.cli.simulate import add_remaining_work_options, remaining_work_config
from costsched.cost.prices import load_catalog
from costsched.goodput import online
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.sim.compare import load_published
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import load_workload


def _value(text: str):
    if text in ("true", "false"):
        return text == "true"
    return float(text)


def by_app(jobs) -> str:
    """``app: mean JCT s / restarts per job`` for each app."""
    apps = sorted({j.application for j in jobs})
    parts = []
    for app in apps:
        mine = [j for j in jobs if j.application == app]
        parts.append(f"{app} {np.mean([j.jct_s for j in mine]):.0f} s/"
                     f"{np.mean([j.restarts for j in mine]):.1f}")
    return ", ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--loads", nargs="+", default=["0.5", "1.0"])
    parser.add_argument("--workloads", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--by-app", action="store_true",
                        help="also print mean JCT and restarts per job of each app")
    parser.add_argument("--explore-factor", type=int, default=online.EXPLORATION_FACTOR,
                        help="learned sizes: at most this many times the most GPUs tried")
    parser.add_argument("--share-measurements", action="store_true",
                        help="a new job starts from what earlier jobs of its app measured")
    add_remaining_work_options(parser)
    parser.add_argument("--first-measure-s", type=float, default=None,
                        help="seconds of steps before a new job's first measurement")
    args = parser.parse_args(argv)
    timing = {} if args.first_measure_s is None else {"first_measure_s": args.first_measure_s}
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    policy = CostAwarePolicy(**overrides)
    data = pollux_dir()
    profiles, published = load_profiles(data), load_published(data)
    instance = load_catalog().instance("g4dn.12xlarge")
    ratios, gpu_hours = {}, {}
    for load in args.loads:
        for number in args.workloads:
            jobs = load_workload(data / "workloads" / f"load-{load}" / f"workload-{number}.csv")
            config = SimConfig(instance=instance, elastic=True, oracle=args.oracle,
                               explore_factor=args.explore_factor,
                               share_measurements=args.share_measurements,
                               **remaining_work_config(args), **timing)
            started = time.monotonic()
            result = Simulator(config=config, profiles=profiles, workload=jobs,
                               policy=policy).run()
            mean = float(np.mean([j.jct_s for j in result.jobs]))
            ratio = mean / published[f"load-{load}"]["pollux"][f"workload-{number}"]
            ratios[(load, number)] = ratio
            restarts = np.mean([j.restarts for j in result.jobs])
            gpu_hours[(load, number)] = float(np.mean([j.gpu_hours for j in result.jobs]))
            print(f"load {load} workload {number}: mean JCT {mean:.0f} s, {ratio:.3f} x "
                  f"Pollux, {restarts:.1f} restarts/job, "
                  f"{gpu_hours[(load, number)]:.3f} GPU-h/job "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
            if args.by_app:
                print("  " + by_app(result.jobs), flush=True)
    print(json.dumps({"set": overrides, "oracle": args.oracle, **timing,
                      "share_measurements": args.share_measurements,
                      "remaining_work": not args.hide_remaining_work and (
                          "while running" if args.remaining_work_while_running else True),
                      "explore_factor": args.explore_factor,
                      "mean_ratio": round(float(np.mean(list(ratios.values()))), 3),
                      "mean_gpu_h_per_job": round(float(np.mean(list(gpu_hours.values()))), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
