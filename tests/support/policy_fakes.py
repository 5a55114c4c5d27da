"""Hand-made jobs and nodes for policy tests: throughput models whose answers we can state."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from costsched.policy.snapshot import ClusterSnapshot, EfficiencyModel, JobView, NodeView


@dataclass(frozen=True)
class FakeThroughput:
    """step_time = fn(placement, local_bsz); per-GPU batch sizes as given."""

    fn: Callable[[tuple[int, ...], float], float]
    choices: tuple[int, ...] = (32,)

    def local_bsz_choices(self) -> np.ndarray:
        return np.array(self.choices)

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        return self.fn(placement, local_bsz)


def perfect_scaling(placement: tuple[int, ...], local_bsz: float) -> float:
    """Step time independent of the number of replicas: linear speedup at big batch."""
    return 0.01 * local_bsz


def no_scaling(placement: tuple[int, ...], local_bsz: float) -> float:
    """Step time grows with replicas as fast as the batch: no speedup at all."""
    return 0.01 * local_bsz * sum(placement)


def nodes(count: int, gpus: int = 4, usd_per_hour: float = 4.0) -> tuple[NodeView, ...]:
    return tuple(NodeView(node_id=f"n{i}", gpu_model="T4", num_gpus=gpus,
                          usd_per_hour=usd_per_hour) for i in range(count))


@dataclass(frozen=True)
class JobArgs:
    """Defaults for a test job; override what a test is about."""

    arrival_time_s: float = 0.0
    attained_service_gpu_s: float = 0.0
    min_gpus: int = 1
    max_gpus: int = 64
    requested_gpus: int = 1
    requested_batch_size: int = 32
    priority: int = 0
    budget_usd: float = math.inf
    spent_usd: float = 0.0
    throughput: FakeThroughput = field(default_factory=lambda: FakeThroughput(perfect_scaling))
    # Pure noise (sqr tiny): efficiency ~1 at any batch, so goodput ~ throughput x batch.
    grad_sqr: float = 1e-9
    grad_var: float = 1.0
    max_batch_size: int = 32 * 64


def job(name: str, **overrides) -> JobView:
    args = JobArgs(**overrides)
    return JobView(
        name=name, arrival_time_s=args.arrival_time_s,
        attained_service_gpu_s=args.attained_service_gpu_s, min_gpus=args.min_gpus,
        max_gpus=args.max_gpus, requested_gpus=args.requested_gpus,
        requested_batch_size=args.requested_batch_size, throughput=args.throughput,
        efficiency=EfficiencyModel(init_batch_size=32, max_batch_size=args.max_batch_size,
                                   grad_sqr=args.grad_sqr, grad_var=args.grad_var),
        priority=args.priority, budget_usd=args.budget_usd, spent_usd=args.spent_usd,
    )


def snapshot(jobs, cluster, placements=None, **kw) -> ClusterSnapshot:
    return ClusterSnapshot(time_s=kw.pop("time_s", 1000.0), round_index=kw.pop("round_index", 0),
                           jobs=tuple(jobs), nodes=tuple(cluster),
                           placements=placements or {}, **kw)


def gpus(decision, name: str) -> int:
    return sum(decision.placements.get(name, {}).values())
