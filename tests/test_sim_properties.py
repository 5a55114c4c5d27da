"""Properties over random small workloads (hypothesis), on the fixture profiles."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costsched.config.bundled import default_catalog_path
from costsched.cost.prices import load_catalog
from costsched.policy.registry import ELASTIC, make_policy
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import synthetic_workload
from tests.support.sim_fixture import Recorder, fixture_profiles

BATCH = {"ncf": 1024, "bert": 24}


def _run(policy: str, seed: int, num_jobs: int, num_nodes: int, autoscale=None):
    instance = load_catalog().instance("g4dn.12xlarge")
    jobs = synthetic_workload(num_jobs=num_jobs, seed=seed, apps=["ncf", "bert"],
                              mean_interarrival_s=300, max_replicas=4 * num_nodes,
                              batch_sizes=BATCH)
    recorder = Recorder(make_policy(policy))
    config = SimConfig(instance=instance, num_nodes=num_nodes, elastic=policy in ELASTIC,
                       autoscale=autoscale)
    result = Simulator(config=config, profiles=fixture_profiles(), workload=jobs,
                       policy=recorder).run()
    return jobs, recorder, result


cases = st.tuples(
    st.sampled_from(["fifo", "las", "cost-aware"]),
    st.integers(0, 10_000), st.integers(1, 5), st.integers(1, 3),
)
fast = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(cases)
def test_nodes_never_over_allocated_and_jobs_within_limits(case):
    policy, seed, num_jobs, num_nodes = case
    _, recorder, _ = _run(policy, seed, num_jobs, num_nodes)
    for snapshot, decision in recorder.rounds:
        capacity = {n.node_id: n.num_gpus for n in (*snapshot.nodes, *decision.nodes_to_add)}
        used = Counter()
        for placement in decision.placements.values():
            used.update(placement)
        assert all(used[n] <= capacity[n] for n in used)
        for job in snapshot.jobs:
            held = sum(decision.placements.get(job.name, {}).values())
            elastic = policy in ELASTIC
            lo, hi = (job.min_gpus, job.max_gpus) if elastic else (job.requested_gpus,) * 2
            assert held == 0 or lo <= held <= hi


def catalog_gpu_usd_per_hour() -> float:
    row = yaml.safe_load(default_catalog_path().read_text())["instance_types"]["g4dn.12xlarge"]
    return row["on_demand_usd_per_hour"] / row["num_gpus_per_node"]


@fast
@given(cases)
def test_every_job_is_served_exactly_as_placed_at_every_round(case):
    """Checked on every job at every round, from what the policy saw and decided: a job
    is in the snapshot exactly while it has arrived and not finished, its attained
    service grows by exactly the GPUs it was placed on for the round, and its final
    GPU-hours and dollars follow from its last round and the catalog price."""
    policy, seed, num_jobs, num_nodes = case
    jobs, recorder, result = _run(policy, seed, num_jobs, num_nodes)
    finish = {r.name: r.finish_s for r in result.jobs}
    assert set(finish) == {spec.name for spec in jobs}
    last: dict[str, tuple[int, float, float]] = {}
    for snapshot, decision in recorder.rounds:
        now = snapshot.time_s
        present = {job.name for job in snapshot.jobs}
        expected = {s.name for s in jobs if s.submit_time_s <= now < finish[s.name]}
        assert present == expected, f"round at {now:.0f} s"
        for job in snapshot.jobs:
            if job.name in last:
                gpus, then, attained = last[job.name]
                assert job.attained_service_gpu_s == pytest.approx(
                    attained + gpus * (now - then)), f"{job.name} at {now:.0f} s"
            else:
                assert job.attained_service_gpu_s == 0.0
        last = {job.name: (sum(decision.placements.get(job.name, {}).values()), now,
                           job.attained_service_gpu_s) for job in snapshot.jobs} | {
            name: value for name, value in last.items() if name not in present}
    price = catalog_gpu_usd_per_hour()
    for record in result.jobs:
        gpus, then, attained = last[record.name]
        assert record.finish_s >= then >= record.submit_s
        assert record.gpu_hours * 3600 == pytest.approx(attained + gpus * (record.finish_s - then))
        assert record.cost_usd == pytest.approx(record.gpu_hours * price)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["las", "cost-aware"]))
def test_same_seed_same_result(seed, policy):
    _, _, first = _run(policy, seed, 4, 2, autoscale=(1, 3) if policy in ELASTIC else None)
    _, _, second = _run(policy, seed, 4, 2, autoscale=(1, 3) if policy in ELASTIC else None)
    assert first == second
