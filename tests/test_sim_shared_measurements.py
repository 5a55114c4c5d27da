"""Shared measurements (``--share-measurements``): a new job starts from the steps earlier
jobs of its app measured (on its GPU type), still without an oracle."""

from __future__ import annotations

import pytest

from costsched.cost.prices import load_catalog
from costsched.goodput.online import OnlineThroughput, SharedMeasurements, config_key
from costsched.goodput.throughput import DEFAULT_PRIOR, ThroughputPoint
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import JobSpec
from tests.support.sim_fixture import Recorder, fixture_profiles


def point(replicas: int, step_s: float, nodes: int = 1) -> ThroughputPoint:
    return ThroughputPoint(num_nodes=nodes, num_replicas=replicas, local_bsz=8.0, accum_steps=1,
                           step_time_s=step_s, sync_time_s=0.02 * (replicas > 1))


def test_a_learner_adopts_only_what_it_has_not_measured_and_refits():
    own = OnlineThroughput()
    own.record(point(1, 0.30))
    fits = own.num_fits
    assert own.adopt([point(1, 0.90), point(2, 0.35)])  # one new configuration
    assert own.num_fits == fits + 1 and own.num_points == 2
    mine = {config_key(p): p.step_time_s for p in own.points}
    assert mine[config_key(point(1, 0.9))] == 0.30  # its own measurement wins
    assert not own.adopt([point(2, 0.50)])  # nothing new: no refit


def test_the_pool_keeps_the_latest_mean_per_configuration_by_key():
    pool = SharedMeasurements()
    pool.add("bert", [point(1, 0.3), point(2, 0.4)])
    pool.add("bert", [point(2, 0.5)])
    pool.add("ncf", [point(4, 0.1)])
    assert [p.step_time_s for p in pool.points("bert")] == [0.3, 0.5]
    assert [p.num_replicas for p in pool.points("ncf")] == [4]
    assert pool.points("yolov3") == []


def run(share: bool):
    """Two bert jobs, the second submitted once the first has run 10 rounds."""
    jobs = [JobSpec(name=f"bert-{i}", submit_time_s=600.0 * i, application="bert",
                    num_replicas=1, batch_size=12) for i in range(2)]
    recorder = Recorder(CostAwarePolicy())
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=2,
                       elastic=True, share_measurements=share)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=jobs, policy=recorder)
    return sim, sim.run(), recorder


@pytest.mark.parametrize("share", [False, True])
def test_a_later_job_of_an_app_starts_from_what_the_earlier_one_measured(share):
    sim, result, recorder = run(share)
    first_seen = next(snap for snap, _ in recorder.rounds
                      if any(j.name == "bert-1" for j in snap.jobs))
    view = {j.name: j for j in first_seen.jobs}["bert-1"]
    earlier = {j.name: j for j in first_seen.jobs}["bert-0"]
    if share:
        # It is offered up to 8 x the most GPUs bert-0 tried, and a fit to bert-0's steps.
        assert view.max_gpus == earlier.max_gpus > 1
        assert view.throughput.cache_key[1] != DEFAULT_PRIOR
    else:
        assert view.max_gpus == 1  # the prior alone: the one GPU asked for, before a step
        assert view.throughput.cache_key[1] == DEFAULT_PRIOR
    assert all(job.jct_s > 0 for job in result.jobs)


def test_oracle_runs_ignore_the_setting_and_learned_runs_change_with_it():
    def jcts(**config):
        jobs = [JobSpec(name=f"bert-{i}", submit_time_s=600.0 * i, application="bert",
                        num_replicas=1, batch_size=12) for i in range(2)]
        cfg = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=2,
                        elastic=True, **config)
        sim = Simulator(config=cfg, profiles=fixture_profiles(), workload=jobs,
                        policy=CostAwarePolicy())
        return [j.jct_s for j in sim.run().jobs]

    assert jcts(oracle=True, share_measurements=True) == jcts(oracle=True)
    assert jcts(share_measurements=True) != jcts()  # it changes what the policy sees


def test_on_several_gpu_types_each_types_learner_adopts_only_that_types_steps():
    from costsched.sim.gpu_types import load_typed_profiles
    from costsched.sim.hetero import HeteroSimulator
    from costsched.sim.workload import load_workload
    from tests.test_sim_hetero import FIXTURE, WORKLOAD, pools

    node_pools = pools()
    profiles = load_typed_profiles(FIXTURE, tuple(p.gpu_type for p in node_pools),
                                   calibrate=False)
    config = SimConfig(instance=node_pools[0].instance, num_nodes=3, elastic=True,
                       share_measurements=True)
    sim = HeteroSimulator(config=config, pools=node_pools, profiles=profiles,
                          workload=load_workload(WORKLOAD), policy=CostAwarePolicy())
    sim.run()
    models = {p.gpu_type: p.instance.gpu_model for p in node_pools}
    pooled = 0
    for gpu_type, model in models.items():
        app = profiles[gpu_type]["bert"]
        for p in sim._shared.points(("bert", model)):  # each one that type's own step time
            shape = p.placement or (p.num_replicas,)
            _, step_s, _ = app.accumulated_step(shape, p.local_bsz * p.accum_steps)
            assert p.step_time_s == pytest.approx(step_s)
            pooled += 1
    assert pooled > 0
