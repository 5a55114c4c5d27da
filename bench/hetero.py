"""cost-aware on Sia's heterogeneous 64-GPU cluster, aware vs unaware of GPU types.

    python bench/hetero.py [--workloads 1 2 ...] [--oracle] [--share-measurements]
                           [--hide-remaining-work | --remaining-work-while-running]
                           [--profiles DIR]

Cluster: 6 x g4dn.12xlarge (4 T4) + 3 x on-prem 8 x RTX 2080 Ti + 2 x p4d.24xlarge
(8 A100), Sia's per-app restart times and step-time calibration, 60 s rounds, Philly
workloads of ``../shared/data/sia`` (160 jobs each). Prints one line per run (with its
seconds) and a table per policy: mean JCT in hours beside published Sia (0.6 h) and
Pollux (1.0 h; Table 3, mean over workloads), GPU-hours, dollars and restarts per job,
and GPU-hours by instance type; then p99 JCT and mean makespan beside Table 3's.
Dollars per job: each job's GPU-seconds on each type x that type's catalog price per
GPU (idle GPUs are not in it; ``cluster $`` is every node for the whole run).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from costsched.cli.simulate import add_remaining_work_options, remaining_work_config
from costsched.cost.prices import load_catalog
from costsched.policy.registry import make_policy
from costsched.sim.gpu_types import SIA_RESTART_S, load_typed_profiles, sia_dir, sia_pools
from costsched.sim.hetero import HeteroSimulator
from costsched.sim.simulator import SimConfig
from costsched.sim.workload import load_workload

PUBLISHED_MEAN_JCT_H = {"cost-aware": ("Sia", 0.6), "cost-aware-unaware": ("Pollux", 1.0)}
"""Sia SOSP '23 Table 3, mean over the Philly workloads: our policy -> its counterpart."""
PUBLISHED_TAIL_H = {"cost-aware": (9.5, 14.2), "cost-aware-unaware": (14.9, 24.5)}
"""The same table's p99 JCT and mean makespan, hours."""


def p99(values) -> float:
    """The 99th percentile as Sia's ``print_run_stats.py`` takes it: the sorted values at
    index int(0.99 n), over every job of every workload."""
    ordered = sorted(values)
    return ordered[int(0.99 * len(ordered))]


POLICIES = ("cost-aware", "cost-aware-unaware")


def sia_cluster(profiles_dir=None):
    """(Sia data folder, the cluster's pools, their typed profiles)."""
    data = sia_dir(profiles_dir)
    pools = sia_pools(load_catalog())
    return data, pools, load_typed_profiles(data, tuple(p.gpu_type for p in pools))


def philly_workload(data, number: int):
    """Philly workload ``number`` of the Sia data folder ``data``."""
    return load_workload(data / "workloads" / "philly" / f"workload-{number}.csv")


def simulate(policy_name: str, jobs, pools, profiles, *, oracle: bool,
             share_measurements: bool = False, told: dict | None = None):
    """(the simulator, its result) of one run on ``pools``."""
    config = SimConfig(instance=pools[0].instance, instance_name=pools[0].instance_name,
                       num_nodes=sum(p.num_nodes for p in pools), elastic=True, oracle=oracle,
                       share_measurements=share_measurements, **(told or {}))
    policy = make_policy(policy_name)
    sim = HeteroSimulator(config=config, pools=pools, profiles=profiles, workload=jobs,
                          policy=policy, aware=policy.heterogeneity_aware,
                          restart_s_by_app=SIA_RESTART_S)
    return sim, sim.run()


def run_one(policy_name: str, jobs, pools, profiles, *, oracle: bool,
            share_measurements: bool = False, told: dict | None = None) -> dict:
    started = time.monotonic()
    sim, result = simulate(policy_name, jobs, pools, profiles, oracle=oracle,
                           share_measurements=share_measurements, told=told)
    n = len(result.jobs)
    return {
        "jct_h": float(np.mean([j.jct_s for j in result.jobs])) / 3600,
        "jcts_h": [j.jct_s / 3600 for j in result.jobs],
        "makespan_h": (max(j.finish_s for j in result.jobs)
                       - min(j.submit_s for j in result.jobs)) / 3600,
        "gpu_h_per_job": sum(j.gpu_hours for j in result.jobs) / n,
        "usd_per_job": sum(j.cost_usd for j in result.jobs) / n,
        "restarts_per_job": sum(j.restarts for j in result.jobs) / n,
        "cluster_usd": result.cost_usd,
        "by_type": sim.gpu_hours_by_type(),
        "seconds": time.monotonic() - started,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", nargs="+", type=int, default=list(range(1, 9)))
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--oracle", action="store_true")
    add_remaining_work_options(parser)
    parser.add_argument("--share-measurements", action="store_true",
                        help="a new job starts from what earlier jobs of its app measured on "
                             "each GPU type")
    parser.add_argument("--profiles", default=None, metavar="DIR",
                        help="Sia data folder (default $COSTSCHED_SIA_DIR or ../shared/data/sia)")
    args = parser.parse_args(argv)
    data, pools, profiles = sia_cluster(args.profiles)
    runs: dict[str, list[dict]] = {name: [] for name in args.policies}
    for number in args.workloads:
        jobs = philly_workload(data, number)
        for name in args.policies:
            row = run_one(name, jobs, pools, profiles, oracle=args.oracle,
                          share_measurements=args.share_measurements,
                          told=remaining_work_config(args))
            runs[name].append(row)
            print(f"workload {number} {name}: mean JCT {row['jct_h']:.2f} h, "
                  f"{row['gpu_h_per_job']:.2f} GPU-h/job, ${row['usd_per_job']:.2f}/job, "
                  f"{row['restarts_per_job']:.1f} restarts/job, cluster ${row['cluster_usd']:.0f}"
                  f" ({row['seconds']:.0f} s)", flush=True)
    print(f"\nworkloads {' '.join(map(str, args.workloads))}"
          f"{' (oracle)' if args.oracle else ' (learned)'}"
          f"{', shared measurements' if args.share_measurements else ''}"
          f"{', work left told while running' if args.remaining_work_while_running else ''}"
          f"{', work left hidden' if args.hide_remaining_work else ''}"
          "; mean over workloads")
    print(f"{'policy':<20} {'JCT h':>6} {'published':>14} {'GPU-h/job':>9} {'$/job':>7} "
          f"{'restarts/job':>12} {'s/run':>6}  GPU-h by type")
    tails = []
    for name, rows in runs.items():
        label, published = PUBLISHED_MEAN_JCT_H[name]
        tails.append((name, label, p99(h for r in rows for h in r["jcts_h"]),
                      np.mean([r["makespan_h"] for r in rows]), *PUBLISHED_TAIL_H[name]))
        by_type = {t: np.mean([r["by_type"][t] for r in rows]) for t in rows[0]["by_type"]}
        print(f"{name:<20} {np.mean([r['jct_h'] for r in rows]):6.3f} "
              f"{label + f' {published:.1f} h':>14} "
              f"{np.mean([r['gpu_h_per_job'] for r in rows]):9.3f} "
              f"{np.mean([r['usd_per_job'] for r in rows]):7.2f} "
              f"{np.mean([r['restarts_per_job'] for r in rows]):12.1f} "
              f"{np.mean([r['seconds'] for r in rows]):6.0f}  "
              + ", ".join(f"{t} {h:.0f}" for t, h in by_type.items()))
    print(f"\n{'policy':<20} {'p99 JCT h':>9} {'published':>11} {'makespan h':>10} "
          f"{'published':>11}  (p99 over every job; makespan: mean over workloads)")
    for name, label, tail, makespan, published_p99, published_makespan in tails:
        print(f"{name:<20} {tail:9.2f} {f'{label} {published_p99:.1f}':>11} {makespan:10.2f} "
              f"{f'{label} {published_makespan:.1f}':>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
