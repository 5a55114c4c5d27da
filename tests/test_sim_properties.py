"""Properties over random small workloads (hypothesis), on the fixture profiles."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costsched.cost.prices import load_catalog
from costsched.policy.registry import ELASTIC, make_policy
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import synthetic_workload
from tests.support.sim_fixture import fixture_profiles

BATCH = {"ncf": 1024, "bert": 24}


class Recorder:
    """Wraps a policy and keeps every (snapshot, decision) it produced."""

    def __init__(self, inner):
        self.inner, self.name, self.rounds = inner, inner.name, []

    def decide(self, snapshot):
        decision = self.inner.decide(snapshot)
        self.rounds.append((snapshot, decision))
        return decision


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


@fast
@given(cases)
def test_every_job_completes_when_the_cluster_can_hold_it(case):
    policy, seed, num_jobs, num_nodes = case
    jobs, _, result = _run(policy, seed, num_jobs, num_nodes)
    assert len(result.jobs) == len(jobs)
    assert all(r.finish_s >= r.submit_s for r in result.jobs)


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["las", "cost-aware"]))
def test_same_seed_same_result(seed, policy):
    _, _, first = _run(policy, seed, 4, 2, autoscale=(1, 3) if policy in ELASTIC else None)
    _, _, second = _run(policy, seed, 4, 2, autoscale=(1, 3) if policy in ELASTIC else None)
    assert first == second
