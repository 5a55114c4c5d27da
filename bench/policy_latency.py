"""Time one cost-aware decision at scale, and a whole 160-job simulation.

    .venv/bin/python bench/policy_latency.py [--profiles DIR] [--jobs 2000] [--nodes 1250]

Targets (issue 3): one decision for 2,000 active jobs on 1,250 nodes x 8 GPUs
within 1 s; a 160-job Pollux workload simulated within 60 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from costsched.cost.prices import load_catalog
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import ClusterSnapshot, EfficiencyModel, JobView, NodeView
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import ProfileThroughput, SimConfig, Simulator, max_useful_gpus
from costsched.sim.workload import load_workload


def make_jobs(profiles, num_jobs: int, seed: int) -> tuple[JobView, ...]:
    rng = np.random.default_rng(seed)
    apps = sorted(profiles)
    jobs = []
    for i in range(num_jobs):
        app = profiles[apps[i % len(apps)]]
        epoch = int(rng.integers(app.max_epochs))
        sqr, var = app.grad_stats(app.init_batch_size, epoch)
        jobs.append(JobView(
            name=f"{app.name}-{i}", arrival_time_s=float(i), attained_service_gpu_s=float(
                rng.exponential(20_000)), min_gpus=1, max_gpus=max_useful_gpus(app),
            requested_gpus=int(rng.integers(1, 9)), requested_batch_size=app.init_batch_size,
            throughput=ProfileThroughput(app),
            efficiency=EfficiencyModel(init_batch_size=app.init_batch_size,
                                       max_batch_size=app.max_batch_size,
                                       grad_sqr=max(sqr, 1e-12), grad_var=var),
        ))
    return tuple(jobs)


def time_decision(profiles, num_jobs: int, num_nodes: int, gpus_per_node: int) -> None:
    nodes = tuple(NodeView(node_id=f"n{i}", gpu_model="T4", num_gpus=gpus_per_node,
                           usd_per_hour=7.824) for i in range(num_nodes))
    jobs = make_jobs(profiles, num_jobs, seed=0)
    policy = CostAwarePolicy()
    placements: dict = {}
    for label in ("cold (empty caches, nothing placed)", "steady (previous placements)"):
        snap = ClusterSnapshot(time_s=100_000.0, round_index=1, jobs=jobs, nodes=nodes,
                               placements=placements)
        start = time.perf_counter()
        decision = policy.decide(snap)
        took = time.perf_counter() - start
        used = sum(sum(p.values()) for p in decision.placements.values())
        print(f"decision {label}: {took:.3f} s for {num_jobs} jobs on {num_nodes} x "
              f"{gpus_per_node} GPUs ({used} GPUs allocated, {len(decision.placements)} jobs "
              f"placed); target <= 1 s")
        placements = decision.placements


def time_simulation(profiles, data: Path) -> None:
    workload = data / "workloads" / "load-1.0" / "workload-1.csv"
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), elastic=True)
    start = time.perf_counter()
    result = Simulator(config=config, profiles=profiles, workload=load_workload(workload),
                       policy=CostAwarePolicy()).run()
    took = time.perf_counter() - start
    mean_jct = sum(j.jct_s for j in result.jobs) / len(result.jobs)
    print(f"simulation: {took:.1f} s for {len(result.jobs)} jobs, {len(result.timeline)} "
          f"rounds (cost-aware, {workload.parent.name}/{workload.stem}, mean JCT "
          f"{mean_jct:.0f} s); target <= 60 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=None, help="Pollux data folder")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=1250)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    args = parser.parse_args(argv)
    data = pollux_dir(args.profiles)
    profiles = load_profiles(data)
    time_decision(profiles, args.jobs, args.nodes, args.gpus_per_node)
    if (data / "workloads").is_dir():
        time_simulation(profiles, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
