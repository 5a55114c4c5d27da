"""Properties over random small workloads (hypothesis) on several GPU types and on a spot
pool: no node over-allocated, no job on two GPU types, preempted jobs resume from a
checkpoint, the same seed gives the same result. Fixture profiles, no Ray."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costsched.cost.prices import load_catalog
from costsched.policy.cost_aware import CostAwarePolicy, UnawareCostAwarePolicy
from costsched.sim.gpu_types import NodePool, load_typed_profiles
from costsched.sim.hetero import HeteroSimulator
from costsched.sim.simulator import SimConfig
from costsched.sim.spot import SpotPool, SpotSimulator
from costsched.sim.spot_trace import SpotTrace
from costsched.sim.workload import synthetic_workload
from tests.support.sim_fixture import Recorder, fixture_profiles

SIA_SMALL = Path(__file__).resolve().parent / "fixtures" / "sia_small"
TYPES = (("aws", "g4dn.12xlarge"), ("rtx", "onprem-rtx2080ti-8x"),
         ("dgx-ext", "p4d.24xlarge"))
fast = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _typed_run(aware: bool, seed: int, num_jobs: int, counts: tuple[int, int, int]):
    catalog = load_catalog()
    pools = tuple(NodePool(gpu_type=t, instance_name=name, instance=catalog.instance(name),
                           num_nodes=n) for (t, name), n in zip(TYPES, counts, strict=True)
                  if n > 0)
    profiles = load_typed_profiles(SIA_SMALL, tuple(p.gpu_type for p in pools), calibrate=False)
    jobs = synthetic_workload(num_jobs=num_jobs, seed=seed, apps=["bert"],
                              mean_interarrival_s=120, max_replicas=4, batch_sizes={"bert": 24})
    recorder = Recorder(CostAwarePolicy() if aware else UnawareCostAwarePolicy())
    config = SimConfig(instance=pools[0].instance, num_nodes=sum(counts), elastic=True)
    sim = HeteroSimulator(config=config, pools=pools, profiles=profiles, workload=jobs,
                          policy=recorder, aware=aware)
    return recorder, sim.run()


typed_cases = st.tuples(st.booleans(), st.integers(0, 10_000), st.integers(1, 6),
                        st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(1, 1)))


@fast
@given(typed_cases)
def test_on_several_gpu_types_no_node_is_over_allocated_and_no_job_spans_two(case):
    aware, seed, num_jobs, counts = case
    recorder, result = _typed_run(aware, seed, num_jobs, counts)
    for snapshot, decision in recorder.rounds:
        nodes = {n.node_id: n for n in snapshot.nodes}
        used = Counter()
        for placement in decision.placements.values():
            used.update(placement)
            assert len({nodes[node_id].gpu_model for node_id in placement}) == 1, placement
        assert all(used[n] <= nodes[n].num_gpus for n in used)
    assert all(j.finish_s > j.submit_s for j in result.jobs)


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_on_several_gpu_types_the_same_seed_gives_the_same_result(seed, aware):
    assert _typed_run(aware, seed, 4, (1, 1, 1))[1] == _typed_run(aware, seed, 4, (1, 1, 1))[1]


def _spot_run(seed: int, num_jobs: int, counts: list[int], interval_s: float,
              autoscale: tuple[int, int] | None):
    jobs = synthetic_workload(num_jobs=num_jobs, seed=seed, apps=["ncf", "bert"],
                              mean_interarrival_s=300, max_replicas=8,
                              batch_sizes={"ncf": 1024, "bert": 24})
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=1,
                       elastic=True, autoscale=autoscale)
    pool = SpotPool(trace=SpotTrace(path="t", gap_s=120.0, counts=tuple(counts)), num_nodes=2,
                    checkpoint_interval_s=interval_s, seed=seed)
    sim = _Watched(config=config, profiles=fixture_profiles(), workload=jobs,
                   policy=CostAwarePolicy(), pool=pool)
    return sim.run(), sim.drops


class _Watched(SpotSimulator):
    """Checks every job's progress where the trace preempts: each round starts with the
    spot pool's replay, so the progress before it is where the last round ended, and a
    preempted job resumes from the point it went back to."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = {j.spec.name: [(0.0, 0.0)] for j in self.jobs}
        self.drops: Counter = Counter()

    def _replay(self, active, time_s):
        for job in active:
            self.seen[job.spec.name].append((job.progress, time_s))
        super()._replay(active, time_s)
        for job in active:
            history = self.seen[job.spec.name]
            if job.progress < history[-1][0] - 1e-9:
                self.drops[job.spec.name] += 1
                # Back to a point the job had reached at the end of an earlier round ...
                back_to = [t for p, t in history if abs(job.progress - p) <= 1e-9]
                assert back_to, (job.spec.name, job.progress)
                # ... at most one checkpoint interval of holding GPUs (plus a round) ago.
                limit = self.pool.checkpoint_interval_s + 2 * self.config.round_s
                assert time_s - max(back_to) <= limit + 1e-6
                history.append((job.progress, time_s))  # it resumes from here


spot_cases = st.tuples(st.integers(0, 10_000), st.integers(1, 5),
                       st.lists(st.integers(0, 2), min_size=2, max_size=12),
                       st.sampled_from([120.0, 300.0, 900.0]),
                       st.sampled_from([None, (0, 2), (1, 1)]))


@fast
@given(spot_cases)
def test_a_preempted_job_resumes_from_a_point_it_had_reached_and_still_finishes(case):
    seed, num_jobs, counts, interval_s, autoscale = case
    result, drops = _spot_run(seed, num_jobs, counts, interval_s, autoscale)
    for job in result.jobs:
        assert job.finish_s > job.submit_s
        assert drops[job.name] <= job.preemptions  # a hit right after a checkpoint loses 0
        assert 0.0 <= job.lost_gpu_hours <= job.gpu_hours + 1e-9
    assert result.spot.num_preemptions == sum(j.preemptions for j in result.jobs)


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([None, (0, 2)]))
def test_with_a_spot_pool_the_same_seed_gives_the_same_result(seed, autoscale):
    counts = [2, 1, 0, 2, 2, 1]
    first = _spot_run(seed, 4, counts, 300.0, autoscale)[0]
    assert first == _spot_run(seed, 4, counts, 300.0, autoscale)[0]
