"""The shortcuts that make a decision over thousands of jobs and several GPU models fast
give the answers of the plain computations they replace, to the last bit.

- :class:`GoodputTable` scores alike jobs together: the same goodput and batch size as
  :func:`best_goodput` job by job.
- :func:`best_size` stops scanning a model's counts early: the same best move as weighing
  every count, and it says when several counts tie (order then decides).
- Whole decisions with the scan are those with every target weighed in order.
- :func:`predict_step_time_s` in floats is the fit's array arithmetic;
  :func:`canonical_placement` is the smallest rotation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest

from costsched.goodput.throughput import (
    FittedThroughput,
    ThroughputParams,
    _optim_s,
    _sync_of_shape,
    predict_step_time_s,
)
from costsched.policy import goodput, hetero
from costsched.policy.cost_aware import CostAwarePolicy, UnawareCostAwarePolicy
from costsched.policy.goodput import GoodputTable, best_goodput
from costsched.policy.size_scan import FREE_MOVE, ModelSizes, best_size, running_max
from costsched.policy.snapshot import (
    ClusterSnapshot,
    EfficiencyModel,
    JobView,
    NodeView,
    TypeOption,
)
from costsched.sim.gpu_types import load_typed_profiles
from costsched.sim.profiles import canonical_placement
from costsched.sim.simulator import ProfileThroughput
from tests.support.policy_fakes import FakeThroughput

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sia_small"
TYPES = {"aws": "T4", "rtx": "RTX2080Ti", "dgx-ext": "A100-40GB"}


def random_params(rng: random.Random) -> ThroughputParams:
    times = {n: math.exp(rng.uniform(math.log(1e-4), math.log(2.0)))
             for n in ("alpha_c", "beta_c", "alpha_n", "beta_n", "alpha_r", "beta_r")}
    return ThroughputParams(**times, gamma=rng.choice([1.0, 10.0, rng.uniform(1.0, 10.0)]))


def throughput_models(rng: random.Random) -> list:
    """Profiled models of the fixture's three types and fitted models, some reused."""
    apps = load_typed_profiles(FIXTURE, tuple(TYPES), calibrate=False)
    profiled = [ProfileThroughput(apps[t]["bert"]) for t in TYPES]
    fitted = [FittedThroughput(random_params(rng), rng.sample([4, 8, 12, 16, 32], 3),
                               rng.choice([8, 12, 32])) for _ in range(4)]
    return profiled + fitted


def efficiency(rng: random.Random, init: int = 12) -> EfficiencyModel:
    return EfficiencyModel(init_batch_size=init, max_batch_size=init * rng.choice([8, 32, 64]),
                           grad_sqr=rng.uniform(1e-3, 2.0), grad_var=rng.uniform(0.0, 20.0))


def view(name: str, throughput, eff: EfficiencyModel, **extra) -> JobView:
    return JobView(name=name, arrival_time_s=0.0, attained_service_gpu_s=0.0, min_gpus=1,
                   max_gpus=64, requested_gpus=1, requested_batch_size=eff.init_batch_size,
                   throughput=throughput, efficiency=eff, **extra)


@pytest.mark.parametrize("gpus_per_node", [4, 8])
def test_scoring_alike_jobs_together_gives_each_job_its_own_best_goodput(gpus_per_node):
    rng = random.Random(gpus_per_node)
    models = throughput_models(rng)
    jobs = [view(f"j{i}", rng.choice(models), efficiency(rng, rng.choice([12, 12, 24])))
            for i in range(60)]
    table = GoodputTable(((j.name, j.throughput, j.efficiency) for j in jobs), gpus_per_node)
    counts = list(range(0, 70))
    rng.shuffle(counts)
    table.matrix(jobs[0].name, counts[:20])  # a group at once, then one by one
    for job in jobs:
        for count in counts:
            with pytest.MonkeyPatch.context() as patch:  # the reference: nothing cached
                patch.setattr(goodput, "_step_table", goodput._new_step_table)
                expected = best_goodput(job, count, gpus_per_node)
            assert table.choice(job.name, count) == expected
            assert table.goodputs(job.name, [count]) == [expected.goodput]


def brute_force(row, sizes: ModelSizes, lo: int, hi: int, now_u: float, now_c: float):
    """Every count weighed: (best ratio, the counts that reach it)."""
    ratios = {}
    for at in range(lo, hi):
        gain, extra = row[at] - now_u, sizes.costs[at] - now_c
        if gain > 0:
            ratios[sizes.sizes[at]] = gain / extra if extra > 0 else FREE_MOVE * gain
    if not ratios:
        return None, []
    best = max(ratios.values())
    return best, [k for k, r in ratios.items() if r == best]


def test_the_scan_finds_the_best_count_every_count_weighed_would_find():
    rng = random.Random(0)
    per_node, price = 8, 2.75
    sizes = ModelSizes(lambda k: k % per_node == 0 or (k < per_node and k & (k - 1) == 0),
                       lambda k: price * k)
    sizes.up_to(600)
    ties_seen = 0
    for _ in range(3000):
        length = rng.randint(0, 40)
        # Concave-ish rows with plateaus (equal utilities tie) and some dips.
        values = [rng.choice([0.0, 0.5, 1.0, 2.0]) for _ in range(length)]
        row = list(itertools.accumulate(values))
        if rng.random() < 0.3:
            row = [rng.choice([0.5, 1.0, 3.0]) for _ in range(length)]
        ahead = running_max(row)
        lo = rng.randint(0, max(length - 1, 0))
        hi = rng.randint(lo, length)
        now_u = rng.choice([0.0, 0.5, rng.uniform(0, 5)])
        now_c = rng.choice([0.0, price * rng.randint(1, 64)])
        start = rng.randint(0, 5)
        padded = [-1.0] * start + row
        best, count, ties = best_size(padded, [-1.0] * start + list(ahead), start, sizes,
                                      lo, hi, now_u, now_c)
        expected, reached = brute_force(row, sizes, lo, hi, now_u, now_c)
        assert best == expected
        assert (ties > 0) == (len(reached) > 1)
        if expected is not None and len(reached) == 1:
            assert count == reached[0]
        ties_seen += len(reached) > 1
    assert ties_seen > 50  # the case that must fall back to the order of the targets


def test_a_row_that_is_not_finite_has_no_running_maximum():
    assert list(running_max([1.0, 3.0, 2.0])) == [3.0, 3.0, 2.0]
    assert running_max([1.0, math.nan]) is None and running_max([math.inf]) is None


PER_GPU_USD = {"T4": 0.978, "RTX2080Ti": 0.274, "A100-40GB": 2.745}
"""Catalog-like prices per GPU-hour of the three models."""


def cluster(rng: random.Random, num_nodes: dict | None = None) -> tuple[NodeView, ...]:
    """Three models, 4 or 8 GPUs a node and 2 to 12 nodes each, or 8 GPUs a node and
    ``num_nodes`` by model."""
    out = []
    for model, price in PER_GPU_USD.items():
        gpus = 8 if num_nodes else rng.choice([4, 8])
        count = num_nodes[model] if num_nodes else rng.randint(2, 12)
        out += [NodeView(node_id=f"{model}-{i}", gpu_model=model, num_gpus=gpus,
                         usd_per_hour=price * gpus) for i in range(count)]
    return tuple(out)


def typed_jobs(rng: random.Random, models: list, count: int, first: int = 0) -> list[JobView]:
    """Jobs whose models per GPU type come from ``models``, every other one the same model
    and batch limits (a large group: scored as arrays), with budgets, priorities,
    services and work left (some none said) that vary."""
    jobs = []
    shared = {m: rng.choice(models) for m in ("T4", "RTX2080Ti", "A100-40GB")}
    for i in range(first, first + count):
        options = {m: TypeOption(throughput=shared[m] if i % 2 else rng.choice(models),
                                 max_gpus=rng.choice([1, 4, 16, 64, 200]))
                   for m in shared if rng.random() < 0.9}
        eff = efficiency(rng)
        if i % 2:
            eff = dataclasses.replace(eff, max_batch_size=eff.init_batch_size * 32)
        jobs.append(dataclasses.replace(
            view(f"j{i}", rng.choice(models), eff), by_gpu_model=options,
            arrival_time_s=float(rng.randint(0, 5000)), priority=rng.choice([0, 0, 1]),
            attained_service_gpu_s=rng.expovariate(1 / 20_000), num_restarts=rng.randint(0, 3),
            budget_usd=rng.choice([math.inf, math.inf, 5.0]), spent_usd=rng.uniform(0, 4),
            max_gpus=200, min_gpus=rng.choice([1, 1, 2]),
            remaining_work=rng.choice([None, 10 ** rng.uniform(0, 7)])))
    return jobs


def flat_jobs(nodes: tuple[NodeView, ...]) -> tuple[list[JobView], dict]:
    """Jobs whose goodput is the same at every size (step time and efficiency flat), twice
    as high on the RTX 2080 Tis, each holding a whole A100 node (its minimum): every RTX
    size that costs no more gains as much, so many reach the best ratio and the order of
    the targets decides (a set's, not ascending). With their placements."""
    slow, fast = FakeThroughput(lambda p, lb: 0.01 * lb), FakeThroughput(lambda p, lb: 0.005 * lb)
    eff = EfficiencyModel(init_batch_size=32, max_batch_size=32 * 256, grad_sqr=1.0,
                          grad_var=0.0)
    held = [(n.node_id, n.num_gpus) for n in nodes if n.gpu_model == "A100-40GB"]
    jobs = [dataclasses.replace(view(f"f{i}", slow, eff), by_gpu_model={
        "T4": TypeOption(throughput=slow, max_gpus=64),
        "RTX2080Ti": TypeOption(throughput=fast, max_gpus=64),
        "A100-40GB": TypeOption(throughput=slow, max_gpus=64)},
        arrival_time_s=float(i), min_gpus=gpus) for i, (_, gpus) in enumerate(held)]
    return jobs, {job.name: {node_id: gpus} for job, (node_id, gpus) in zip(jobs, held,
                                                                           strict=True)}


@pytest.mark.parametrize("seed", range(7))
def test_decisions_with_the_scan_are_those_with_every_target_weighed(seed, monkeypatch):
    rng = random.Random(seed)
    models = throughput_models(rng)
    policy = (UnawareCostAwarePolicy() if seed == 5 else
              CostAwarePolicy(node_shapes=seed != 4))
    nodes = cluster(rng, {"T4": 2, "RTX2080Ti": 16, "A100-40GB": 3} if seed == 6 else None)
    jobs = typed_jobs(rng, models, (20, 70, 40, 120, 70, 120, 10)[seed])
    placements: dict = {}
    if seed == 6:
        flat, placements = flat_jobs(nodes)
        jobs += flat
    decisions = []
    for round_index in range(3):
        snap = ClusterSnapshot(time_s=10_000.0, round_index=round_index, jobs=tuple(jobs),
                               nodes=nodes, placements=placements)
        with monkeypatch.context() as patch:  # every target weighed, job by job, uncached
            patch.setattr(hetero._TypedGrowth, "_best_size", lambda *args: False)
            patch.setattr(hetero, "GROUP_MIN_JOBS", 10**9)
            patch.setattr(goodput, "_step_table", goodput._new_step_table)
            weighed = policy.decide(snap)
        scanned = policy.decide(snap)
        assert scanned == weighed
        decisions.append(scanned)
        placements = dict(scanned.placements)
        jobs = jobs[3:] + typed_jobs(rng, models, 3, first=1000 + 3 * round_index)  # turnover
    assert any(d.placements for d in decisions)


def test_a_step_time_in_floats_is_the_fits_own_arithmetic():
    rng = random.Random(1)
    for _ in range(20_000):
        params = random_params(rng)
        replicas = rng.randint(1, 300)
        nodes_ = rng.randint(1, replicas)
        local, accum = rng.choice([float(rng.randint(1, 512)), rng.uniform(0.5, 512)]), \
            rng.randint(1, 8)
        compute = params.alpha_c + params.beta_c * np.array([local])
        sync = _sync_of_shape(params, np.maximum(np.array([replicas]) - 2, 0),
                              np.array([nodes_ > 1]), np.array([replicas > 1]))
        expected = (accum - 1) * compute + _optim_s(params, compute, sync)
        got = predict_step_time_s(params, nodes_, replicas, local, accum)
        # numpy's vectorised power may differ from libm's in the last bits (AVX-512)
        assert math.isclose(got, expected[0], rel_tol=1e-14, abs_tol=0.0)


def test_the_canonical_placement_is_the_smallest_rotation_of_the_nodes_used():
    def smallest_rotation(placement):
        used = tuple(n for n in placement if n > 0)
        return min((used[i:] + used[:i] for i in range(len(used))), default=())

    rng = random.Random(2)
    shapes = [p for n in range(6) for p in itertools.product(range(4), repeat=n)]
    shapes += [tuple(rng.choice([0, 1, 2, 4, 8, 8, 8]) for _ in range(rng.randint(1, 60)))
               for _ in range(5000)]
    assert all(canonical_placement(p) == smallest_rotation(p) for p in shapes)


def test_a_profiles_step_tables_are_kept_on_it_and_freed_with_it():
    """A simulation's oracle view caches step tables on the app profiles, and nothing
    module-wide keeps the profiles (their DataFrames and memos) alive after the run."""
    import gc
    import weakref

    from costsched.sim.profiles import load_profiles
    from costsched.sim.workload import load_workload
    from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD, simulate

    profiles = load_profiles(FIXTURE)
    result = simulate(load_workload(FIXTURE_WORKLOAD), "cost-aware", profiles=profiles,
                      oracle=True)
    assert all(job.jct_s > 0 for job in result.jobs)
    used = {name for name, app in profiles.items() if app.step_tables}
    assert used == {job.application for job in result.jobs}
    refs = [weakref.ref(app) for app in profiles.values()]
    del profiles, result
    gc.collect()
    assert [ref() for ref in refs] == [None] * len(refs)
