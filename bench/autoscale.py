"""cost-aware autoscaling against the fixed 16-node cluster: dollars, mean JCT, node changes.

    python bench/autoscale.py [--workloads 1 2 3 4] [--load 1.0] [--autoscale 4:16]
                              [--usd-per-job-hour 1 4 16] [--half-life 0 300] [--oracle]

Pollux workloads of ``../shared/data/pollux`` at ``--load``, g4dn.12xlarge (4 T4, $3.912
per node-hour) on-demand nodes, 60 s rounds, 30 s restarts, learned throughput models
(``--oracle``: the measured profiles). Per workload: cost-aware on 16 fixed nodes, then
cost-aware with ``--autoscale`` for every pair of ``--usd-per-job-hour`` (what an hour of
a job's JCT is worth: the policy keeps a GPU whose JCT saving is worth what it adds to
the bill) and ``--half-life`` (seconds; 0: act on each round's wanted node count, else
on its moving average, :mod:`costsched.policy.autoscale_hysteresis`).

Dollars: every node for as long as it exists. Node changes: rounds that added (removed)
nodes, and how many nodes, counted from the per-round node count, the first round's
resize from 16 included. Prints one line per run (with its seconds), then means over
workloads and the ratios autoscaled / fixed of mean dollars and mean JCT.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from costsched.cli.simulate import parse_autoscale
from costsched.cost.prices import load_catalog
from costsched.policy.autoscale_hysteresis import NodeCountHysteresis
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.sim.outputs import summarise
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import load_workload

INSTANCE_TYPE = "g4dn.12xlarge"
NUM_NODES = 16


def node_changes(timeline, start: int) -> dict[str, int]:
    """Rounds that added and removed nodes, and nodes added and removed, from the
    per-round node count (a round either adds or removes, never both)."""
    counts = np.diff([start] + [nodes for _, _, nodes, _ in timeline])
    return {"add_rounds": int((counts > 0).sum()), "nodes_added": int(counts[counts > 0].sum()),
            "remove_rounds": int((counts < 0).sum()),
            "nodes_removed": int(-counts[counts < 0].sum())}


def run_one(jobs, profiles, *, policy: CostAwarePolicy, autoscale, half_life_s: float,
            oracle: bool) -> dict:
    hysteresis = None
    if autoscale is not None and half_life_s > 0:
        hysteresis = NodeCountHysteresis(half_life_s=half_life_s)
    config = SimConfig(instance=load_catalog().instance(INSTANCE_TYPE), num_nodes=NUM_NODES,
                       elastic=True, oracle=oracle, autoscale=autoscale,
                       autoscale_hysteresis=hysteresis)
    started = time.monotonic()
    result = Simulator(config=config, profiles=profiles, workload=jobs, policy=policy).run()
    summary = summarise(result, policy=policy.name, workload="")
    start = NUM_NODES if autoscale is None else min(max(NUM_NODES, autoscale[0]), autoscale[1])
    return {"jct_h": summary["mean_jct_s"] / 3600, "usd": summary["cost_usd"],
            "restarts": summary["num_restarts"], "node_h": summary["node_hours"],
            **node_changes(result.timeline, start), "seconds": time.monotonic() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--load", default="1.0", choices=["0.5", "1.0"])
    parser.add_argument("--autoscale", default="4:16", metavar="MIN:MAX")
    parser.add_argument("--usd-per-job-hour", nargs="+", type=float, default=[1.0, 4.0, 16.0])
    parser.add_argument("--half-life", nargs="+", type=float, default=[0.0, 300.0],
                        help="seconds; 0 = no hysteresis")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--profiles", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    autoscale = parse_autoscale(args.autoscale)
    data = pollux_dir(args.profiles)
    profiles = load_profiles(data)
    runs = {"fixed 16": (CostAwarePolicy(), None, 0.0)}
    for usd in args.usd_per_job_hour:
        for half_life_s in args.half_life:
            runs[f"${usd:g}/job-h hl {half_life_s:g}s"] = (
                CostAwarePolicy(usd_per_job_hour=usd), autoscale, half_life_s)
    rows: dict[str, list[dict]] = {name: [] for name in runs}
    for number in args.workloads:
        jobs = load_workload(data / "workloads" / f"load-{args.load}" / f"workload-{number}.csv")
        for name, (policy, scaling, half_life_s) in runs.items():
            row = run_one(jobs, profiles, policy=policy, autoscale=scaling,
                          half_life_s=half_life_s, oracle=args.oracle)
            rows[name].append(row)
            print(f"workload {number} {name:<22}: mean JCT {row['jct_h']:.3f} h, "
                  f"${row['usd']:.2f}, {row['restarts']} restarts, node adds "
                  f"{row['add_rounds']} ({row['nodes_added']} nodes), removals "
                  f"{row['remove_rounds']} ({row['nodes_removed']} nodes) "
                  f"({row['seconds']:.0f} s)", flush=True)
    print(f"\nworkloads {' '.join(map(str, args.workloads))} (load {args.load}, autoscale "
          f"{args.autoscale}, {'oracle' if args.oracle else 'learned'}); means over workloads")
    print(f"{'run':<24} {'JCT h':>6} {'$':>8} {'$ ratio':>7} {'JCT ratio':>9} {'restarts':>8} "
          f"{'add rounds':>10} {'remove rounds':>13} {'s/run':>5}")
    fixed = None
    for name, got in rows.items():
        m = {key: float(np.mean([r[key] for r in got])) for key in got[0]}
        fixed = fixed or m
        print(f"{name:<24} {m['jct_h']:6.3f} {m['usd']:8.2f} {m['usd'] / fixed['usd']:7.3f} "
              f"{m['jct_h'] / fixed['jct_h']:9.3f} {m['restarts']:8.1f} {m['add_rounds']:10.1f} "
              f"{m['remove_rounds']:13.1f} {m['seconds']:5.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
