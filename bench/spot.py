"""cost-aware on all on-demand nodes vs on-demand plus a spot pool replayed from a real trace.

    python bench/spot.py [--workloads 1 2 3 4] [--trace PATH] [--on-demand-nodes 8]
                         [--spot-nodes 16] [--checkpoint-interval 1800]
                         [--checkpoint-cost 10] [--fixed-checkpoint-interval]
                         [--spot-notice 0] [--spot-seed 0] [--oracle]
                         [--autoscale MIN:MAX [--usd-per-job-hour USD]] [--no-blind]

Pollux load-1.0 workloads of ``../shared/data/pollux`` (160 jobs each), g4dn.12xlarge
(4 T4) nodes, 60 s rounds, 30 s restarts, learned throughput models (``--oracle``: the
measured profiles). Two clusters per workload:

(a) ``on-demand``: 16 on-demand nodes (the default simulator cluster);
(b) ``spot``: ``--on-demand-nodes`` on-demand nodes plus a spot pool of up to
    ``--spot-nodes`` nodes whose capacity replays ``--trace`` from its start (default
    availability-16-node/us-east-2b_v100_1.json; one node per trace instance), jobs
    checkpointing at most every ``--checkpoint-interval`` seconds (on spot at Young's
    interval for the preemption rate seen so far, unless ``--fixed-checkpoint-interval``),
    each periodic checkpoint pausing training ``--checkpoint-cost`` seconds;
(c) ``spot-blind`` (unless ``--no-blind``): cluster (b), with the policy's preemption
    rate pinned at 0, so every job is free to use spot (the market choice switched off).

With ``--autoscale MIN:MAX`` the on-demand pool of (b) and (c) is sized by the policy
within those bounds (it also releases spot nodes it does not want), at
``--usd-per-job-hour``, and a fourth run is added: ``od-auto``, all on-demand, autoscaled
0:16 at the same setting.

Dollars: every node for as long as it exists, at the catalog's on-demand or spot price.
Prints one line per run (with its seconds), then the means over workloads and the ratios
spot / on-demand of dollars and mean JCT.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from costsched.cli.simulate import parse_autoscale
from costsched.cost.prices import load_catalog
from costsched.policy.autoscale_hysteresis import DEFAULT_USD_PER_JOB_HOUR
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.sim.outputs import summarise
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.spot import (
    DEFAULT_CHECKPOINT_COST_S,
    DEFAULT_CHECKPOINT_INTERVAL_S,
    SpotPool,
    SpotSimulator,
)
from costsched.sim.spot_trace import load_spot_trace
from costsched.sim.workload import load_workload

DEFAULT_TRACE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "spot"
                 / "availability-16-node" / "us-east-2b_v100_1.json")
INSTANCE_TYPE = "g4dn.12xlarge"


BLIND = CostAwarePolicy(spot_prior_preemptions_per_node_hour=0.0, spot_prior_node_hours=1e15)
"""cost-aware for which spot is never preempted (the prior outweighs any observation)."""


def run_one(jobs, profiles, *, pool: SpotPool | None, num_nodes: int, oracle: bool,
            policy: CostAwarePolicy, autoscale: tuple[int, int] | None = None) -> dict:
    config = SimConfig(instance=load_catalog().instance(INSTANCE_TYPE), num_nodes=num_nodes,
                       elastic=True, oracle=oracle, autoscale=autoscale)
    if pool is None:
        sim = Simulator(config=config, profiles=profiles, workload=jobs, policy=policy)
    else:
        sim = SpotSimulator(config=config, profiles=profiles, workload=jobs, policy=policy,
                            pool=pool)
    started = time.monotonic()
    result = sim.run()
    summary = summarise(result, policy="cost-aware", workload="")
    return {"jct_h": summary["mean_jct_s"] / 3600, "usd": summary["cost_usd"],
            "preemptions": summary.get("num_preemptions", 0),
            "lost_gpu_h": summary.get("lost_gpu_s", 0.0) / 3600,
            "paused_gpu_h": summary.get("checkpoint_paused_gpu_s", 0.0) / 3600,
            "spot_node_h": summary.get("spot_node_hours", 0.0),
            "od_node_h": summary.get("on_demand_node_hours", summary["node_hours"]),
            "seconds": time.monotonic() - started}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--trace", default=str(DEFAULT_TRACE))
    parser.add_argument("--on-demand-nodes", type=int, default=8)
    parser.add_argument("--spot-nodes", type=int, default=16)
    parser.add_argument("--checkpoint-interval", type=float,
                        default=DEFAULT_CHECKPOINT_INTERVAL_S)
    parser.add_argument("--checkpoint-cost", type=float, default=DEFAULT_CHECKPOINT_COST_S,
                        metavar="S", help="seconds each periodic checkpoint pauses training")
    parser.add_argument("--fixed-checkpoint-interval", action="store_true",
                        help="checkpoint every --checkpoint-interval on spot too (default: "
                             "Young's interval for the preemption rate seen so far)")
    parser.add_argument("--spot-notice", type=float, default=0.0, metavar="S",
                        help="seconds of warning before a preemption (AWS: 120; default 0)")
    parser.add_argument("--spot-seed", type=int, default=0,
                        help="seed of which spot nodes a drop in the trace preempts")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--no-blind", action="store_true", help="skip (c)")
    parser.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                        help="size the on-demand pool of (b) and (c) within MIN:MAX (the "
                             "policy also releases spot nodes it does not want), and add "
                             "od-auto: all on-demand, autoscaled 0:16")
    parser.add_argument("--usd-per-job-hour", type=float, default=DEFAULT_USD_PER_JOB_HOUR,
                        help="with --autoscale: dollars a job-hour of JCT is worth")
    parser.add_argument("--profiles", default=None, metavar="DIR")
    args = parser.parse_args(argv)
    data = pollux_dir(args.profiles)
    profiles = load_profiles(data)
    pool = SpotPool(trace=load_spot_trace(args.trace), num_nodes=args.spot_nodes,
                    checkpoint_interval_s=args.checkpoint_interval, notice_s=args.spot_notice,
                    checkpoint_cost_s=args.checkpoint_cost,
                    fixed_interval=args.fixed_checkpoint_interval, seed=args.spot_seed)
    autoscale = parse_autoscale(args.autoscale)
    aware = CostAwarePolicy(usd_per_job_hour=args.usd_per_job_hour)
    blind = dataclasses.replace(BLIND, usd_per_job_hour=args.usd_per_job_hour)
    clusters = {"on-demand": (None, 16, aware, None),
                "spot": (pool, args.on_demand_nodes, aware, autoscale)}
    if autoscale is not None:
        clusters["od-auto"] = (None, 16, aware, (0, 16))
    if not args.no_blind:
        clusters["spot-blind"] = (pool, args.on_demand_nodes, blind, autoscale)
    rows: dict[str, list[dict]] = {name: [] for name in clusters}
    pool_text = (f"on-demand autoscaled {args.autoscale} at ${args.usd_per_job_hour:g}/job-h"
                 if autoscale else f"{args.on_demand_nodes} on-demand")
    every = "on spot at Young's interval, at most" if pool.shortens_interval else "every"
    print(f"(b) spot: {pool_text} + up to {args.spot_nodes} spot from "
          f"{args.trace}, checkpoints {every} {args.checkpoint_interval:.0f} s, "
          f"{args.checkpoint_cost:g} s each, notice {args.spot_notice:.0f} s", flush=True)
    for number in args.workloads:
        jobs = load_workload(data / "workloads" / "load-1.0" / f"workload-{number}.csv")
        for name, (spot_pool, num_nodes, policy, scale) in clusters.items():
            row = run_one(jobs, profiles, pool=spot_pool, num_nodes=num_nodes,
                          oracle=args.oracle, policy=policy, autoscale=scale)
            rows[name].append(row)
            print(f"workload {number} {name:<10}: mean JCT {row['jct_h']:.3f} h, "
                  f"${row['usd']:.2f}, {row['preemptions']} preemptions, "
                  f"{row['lost_gpu_h']:.1f} GPU-h lost, {row['paused_gpu_h']:.1f} paused "
                  f"for checkpoints, node-h on-demand "
                  f"{row['od_node_h']:.1f} spot {row['spot_node_h']:.1f} "
                  f"({row['seconds']:.0f} s)", flush=True)
    print(f"\nworkloads {' '.join(map(str, args.workloads))} (load 1.0, "
          f"{'oracle' if args.oracle else 'learned'}); means over workloads")
    print(f"{'cluster':<11} {'JCT h':>7} {'$':>8} {'preemptions':>11} {'GPU-h lost':>10} "
          f"{'GPU-h paused':>12} {'s/run':>6}")
    means = {}
    for name, got in rows.items():
        means[name] = {key: float(np.mean([r[key] for r in got])) for key in got[0]}
        m = means[name]
        print(f"{name:<11} {m['jct_h']:7.3f} {m['usd']:8.2f} {m['preemptions']:11.1f} "
              f"{m['lost_gpu_h']:10.1f} {m['paused_gpu_h']:12.1f} {m['seconds']:6.0f}")
    od = means["on-demand"]
    for name in [n for n in means if n != "on-demand"]:
        print(f"ratio {name} / on-demand: dollars {means[name]['usd'] / od['usd']:.3f}, "
              f"mean JCT {means[name]['jct_h'] / od['jct_h']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
