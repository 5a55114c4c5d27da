"""Time cost-aware decisions at scale, and whole 160-job simulations, on one and three GPU types.

    .venv/bin/python bench/policy_latency.py [--only one-type|three-types] [--jobs 2000]
        [--nodes 1250] [--gpus-per-node 8] [--profiles DIR] [--sia-profiles DIR]

Targets (issue 3): one decision for 2,000 active jobs on 1,250 nodes x 8 GPUs within
1 s; a 160-job workload simulated within 60 s. Measured twice:

* one type: T4 nodes, the Pollux profiles and a load-1.0 Pollux workload;
* three types (Sia's setting): the nodes split over T4 (``aws``), RTX 2080 Ti (``rtx``)
  and A100 (``dgx-ext``), each priced by its catalog row at 8 GPUs per node, every job
  seeing its measured profile on each type; the simulation is ``costsched simulate
  --cluster sia`` of Philly workload 1 (learned models). Needs the Sia data folder
  (``../shared/data/sia``, ``$COSTSCHED_SIA_DIR`` or ``--sia-profiles``).

A decision is timed cold (empty caches, nothing placed) and steady (the first
decision's placements held); the snapshot is built outside the timing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from costsched.cost.prices import load_catalog
from costsched.errors import ConfigError
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import ClusterSnapshot, Decision, EfficiencyModel, JobView, NodeView
from costsched.sim.gpu_types import (
    SIA_CLUSTER,
    SIA_RESTART_S,
    NodePool,
    load_typed_profiles,
    sia_dir,
    sia_pools,
)
from costsched.sim.hetero import HeteroSimulator
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import ProfileThroughput, SimConfig, Simulator, max_useful_gpus
from costsched.sim.workload import JobSpec, load_workload

SCOPES = ("one-type", "three-types")
"""What ``--only`` may pick."""
DECISION_LABELS = ("cold (empty caches, nothing placed)", "steady (previous placements)")


def make_jobs(profiles, num_jobs: int, seed: int) -> tuple[JobView, ...]:
    rng = np.random.default_rng(seed)
    apps = sorted(profiles)
    jobs = []
    for i in range(num_jobs):
        app = profiles[apps[i % len(apps)]]
        epoch = int(rng.integers(app.max_epochs))
        sqr, var = app.grad_stats(app.init_batch_size, epoch)
        progress = app.curve_column(app.init_batch_size, "progress")
        done = float(progress[epoch - 1]) if epoch else 0.0
        jobs.append(JobView(
            name=f"{app.name}-{i}", arrival_time_s=float(i), attained_service_gpu_s=float(
                rng.exponential(20_000)), min_gpus=1, max_gpus=max_useful_gpus(app),
            requested_gpus=int(rng.integers(1, 9)), requested_batch_size=app.init_batch_size,
            throughput=ProfileThroughput(app),
            efficiency=EfficiencyModel(init_batch_size=app.init_batch_size,
                                       max_batch_size=app.max_batch_size,
                                       grad_sqr=max(sqr, 1e-12), grad_var=var),
            remaining_work=app.target_progress - done,
        ))
    return tuple(jobs)


def report_decision(label: str, took: float, decision: Decision, num_jobs: int,
                    nodes: str) -> None:
    used = sum(sum(p.values()) for p in decision.placements.values())
    print(f"decision {label}: {took:.3f} s for {num_jobs} jobs on {nodes} ({used} GPUs "
          f"allocated, {len(decision.placements)} jobs placed); target <= 1 s")


def time_decision(profiles, num_jobs: int, num_nodes: int, gpus_per_node: int
                  ) -> list[Decision]:
    nodes = tuple(NodeView(node_id=f"n{i}", gpu_model="T4", num_gpus=gpus_per_node,
                           usd_per_hour=7.824) for i in range(num_nodes))
    jobs = make_jobs(profiles, num_jobs, seed=0)
    policy = CostAwarePolicy()
    placements: dict = {}
    decisions = []
    for label in DECISION_LABELS:
        snap = ClusterSnapshot(time_s=100_000.0, round_index=1, jobs=jobs, nodes=nodes,
                               placements=placements)
        start = time.perf_counter()
        decision = policy.decide(snap)
        took = time.perf_counter() - start
        report_decision(label, took, decision, num_jobs, f"{num_nodes} x {gpus_per_node} GPUs")
        placements = decision.placements
        decisions.append(decision)
    return decisions


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


def scaled_pools(num_nodes: int, gpus_per_node: int) -> tuple[NodePool, ...]:
    """Sia's three GPU types at ``gpus_per_node`` GPUs per node (same price per GPU),
    ``num_nodes`` split as evenly as can be (the first types get the remainder)."""
    share, extra = divmod(num_nodes, len(SIA_CLUSTER))
    catalog = load_catalog()
    return tuple(NodePool(gpu_type=gpu_type, instance_name=name,
                          instance=catalog.instance(name).with_gpus_per_node(gpus_per_node),
                          num_nodes=share + (i < extra))
                 for i, (gpu_type, name, _) in enumerate(SIA_CLUSTER))


def typed_cluster(typed, pools: tuple[NodePool, ...], num_jobs: int,
                  seed: int) -> HeteroSimulator:
    """A Sia-rules simulator holding ``num_jobs`` jobs mid-training (random epoch and
    attained service, apps in turn), each job seeing its measured profile on every type."""
    rng = np.random.default_rng(seed)
    apps = sorted(typed[pools[0].gpu_type])
    specs = []
    for i in range(num_jobs):
        app = typed[pools[0].gpu_type][apps[i % len(apps)]]
        specs.append(JobSpec(name=f"{app.name}-{i}", submit_time_s=float(i),
                             application=app.name, num_replicas=int(rng.integers(1, 9)),
                             batch_size=app.init_batch_size))
    config = SimConfig(instance=pools[0].instance, instance_name=pools[0].instance_name,
                       num_nodes=sum(p.num_nodes for p in pools), elastic=True, oracle=True)
    sim = HeteroSimulator(config=config, pools=pools, profiles=typed, workload=specs,
                          policy=CostAwarePolicy(), restart_s_by_app=SIA_RESTART_S)
    for job in sim.jobs:
        progress = job.app.curve_column(job.app.init_batch_size, "progress")
        epoch = int(rng.integers(job.app.max_epochs))
        job.progress = float(progress[epoch - 1]) if epoch else 0.0
        job.gpu_s = float(rng.exponential(20_000))
    return sim


def time_typed_decision(typed, num_jobs: int, num_nodes: int, gpus_per_node: int
                        ) -> list[Decision]:
    pools = scaled_pools(num_nodes, gpus_per_node)
    sim = typed_cluster(typed, pools, num_jobs, seed=0)
    policy = CostAwarePolicy()
    shape = " + ".join(f"{p.num_nodes} x {gpus_per_node} {p.instance.gpu_model}" for p in pools)
    decisions = []
    for label in DECISION_LABELS:
        # What a simulated round shows the policy: the simulator's own job and node views.
        snap = sim.snapshot(sim.jobs, time_s=100_000.0, round_index=1)
        start = time.perf_counter()
        decision = policy.decide(snap)
        took = time.perf_counter() - start
        report_decision(f"three types, {label}", took, decision, num_jobs, shape)
        for job in sim.jobs:
            job.placement = dict(decision.placements.get(job.spec.name, {}))
        decisions.append(decision)
    return decisions


def time_typed_simulation(typed, data: Path) -> None:
    workload = data / "workloads" / "philly" / "workload-1.csv"
    pools = sia_pools(load_catalog())
    config = SimConfig(instance=pools[0].instance, instance_name=pools[0].instance_name,
                       num_nodes=sum(p.num_nodes for p in pools), elastic=True)
    start = time.perf_counter()
    result = HeteroSimulator(config=config, pools=pools, profiles=typed,
                             workload=load_workload(workload), policy=CostAwarePolicy(),
                             restart_s_by_app=SIA_RESTART_S).run()
    took = time.perf_counter() - start
    mean_jct = sum(j.jct_s for j in result.jobs) / len(result.jobs)
    print(f"simulation, three types (--cluster sia): {took:.1f} s for {len(result.jobs)} "
          f"jobs, {len(result.timeline)} rounds (cost-aware, learned models, philly/"
          f"{workload.stem}, mean JCT {mean_jct:.0f} s); target <= 60 s")


def run_three_types(args: argparse.Namespace) -> None:
    data = sia_dir(args.sia_profiles)
    try:
        typed = load_typed_profiles(data, tuple(t for t, _, _ in SIA_CLUSTER))
    except ConfigError as error:
        print(f"three types skipped: {error}")
        return
    time_typed_decision(typed, args.jobs, args.nodes, args.gpus_per_node)
    if (data / "workloads" / "philly").is_dir():
        time_typed_simulation(typed, data)
    else:
        print(f"three-type simulation skipped: no workloads/philly in {data}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=SCOPES, default=None,
                        help="run one set of measurements (default: all)")
    parser.add_argument("--profiles", default=None, help="Pollux data folder")
    parser.add_argument("--sia-profiles", default=None, help="Sia data folder")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--nodes", type=int, default=1250)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    args = parser.parse_args(argv)
    if args.only in (None, "one-type"):
        data = pollux_dir(args.profiles)
        profiles = load_profiles(data)
        time_decision(profiles, args.jobs, args.nodes, args.gpus_per_node)
        if (data / "workloads").is_dir():
            time_simulation(profiles, data)
    if args.only in (None, "three-types"):
        run_three_types(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
