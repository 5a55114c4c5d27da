"""One learner for the simulator and the live scheduler: the same observations give the
same fit and the same sizes offered, and a live job grows by at most the exploration factor
times what it measured, as in simulation."""

from __future__ import annotations

import pytest
import yaml
from threadpoolctl import threadpool_limits

from costsched.config.job import parse_job
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.goodput.online import EXPLORATION_FACTOR, OnlineThroughput
from costsched.goodput.throughput import ThroughputParams, ThroughputPoint, predict_step_time_s
from costsched.scheduler.job_models import JobModels, Measurement
from costsched.scheduler.policy_view import job_view
from costsched.scheduler.state import JobStore
from costsched.sim.simulator import SimConfig, Simulator, max_useful_gpus
from costsched.sim.workload import JobSpec
from tests.conftest import quickstart_dict
from tests.support.sim_fixture import fixture_profiles
from tests.test_scheduler_fakes import harness, job_text, node
from tests.test_sim_learned import Recorder


def simulated_learning(spec: JobSpec):
    """Run ``spec`` alone, learning (cost-aware): per step the simulator's learner
    recorded, (the round, the point, its fit after it); and per round, the most GPUs
    the policy was offered for each job."""
    recorder = Recorder()
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=2,
                       elastic=True)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=[spec],
                    policy=recorder)
    learner, steps = sim.jobs[0].learned, []
    record = learner.record

    def logged(point):
        refitted = record(point)
        steps.append((len(recorder.rounds) - 1, point, learner.params))
        return refitted

    learner.record = logged
    sim.run()
    return steps, [{name: view.max_gpus for name, view in views.items()}
                   for views, _ in recorder.rounds]


def live_view(tmp_path, model, *, min_workers: int, max_workers: int, per_worker: int = 1,
              elastic: bool = True):
    """The view the live controller builds of a job, given its measured model."""
    data = quickstart_dict()
    data["cost"] = {"instance_type": "g4dn.12xlarge", "spot": False, "budget_usd": 50.0}
    data["scaling"].update(min_workers=min_workers, max_workers=max_workers,
                           accelerators_per_worker=per_worker)
    config = parse_job(data, "job")
    record = JobStore(tmp_path / "jobs.db").add_job(
        name="job", config_yaml=yaml.safe_dump(data), config_hash=config.config_hash(),
        priority=0, budget_usd=50.0, min_workers=min_workers, max_workers=max_workers, now=0.0)
    return job_view(record, config, 0.05, rate_of_job(config, load_catalog()),
                    elastic=elastic, model=model)


def test_live_models_fit_and_offer_what_the_simulator_learned(tmp_path):
    # A bert job as the simulator ran it: each step its learner recorded goes, as the
    # live runner reports it, into the scheduler's store; after each, the fit and the
    # largest size offered next round are the simulator's.
    steps, offered = simulated_learning(JobSpec(
        name="solo", submit_time_s=0, application="bert", num_replicas=1, batch_size=12))
    assert len({p.num_replicas for _, p, _ in steps}) >= 2  # it explored past one GPU
    models = JobModels(tmp_path / "state.db")
    most_gpus = max_useful_gpus(fixture_profiles()["bert"])  # the simulator's elastic max
    with threadpool_limits(limits=1):  # as the simulator fits
        for round_index, p, sim_params in steps:
            models.record("solo", Measurement(
                num_workers=p.num_replicas, num_nodes=p.num_nodes, local_bsz=p.local_bsz,
                accum_steps=p.accum_steps, step_time_s=p.step_time_s,
                sync_time_s=p.sync_time_s), now=float(round_index))
            model = models.model("solo")
            assert model.params == sim_params
            if round_index + 1 < len(offered):
                view = live_view(tmp_path / str(round_index), model, min_workers=1,
                                 max_workers=most_gpus)
                assert view.max_gpus == offered[round_index + 1]["solo"]


def test_a_restored_learner_refits_as_the_one_that_kept_running(tmp_path):
    # The store rebuilds the learner for every measurement: its refits and their warm
    # starts are those of a learner kept in memory, so a scheduler restart changes nothing.
    true = ThroughputParams(alpha_c=0.2, beta_c=0.004, alpha_n=0.5, beta_n=0.05,
                            alpha_r=0.1, beta_r=0.01, gamma=2.0)
    kept = OnlineThroughput()
    for i, workers in enumerate((1, 2, 2, 4, 3, 4, 1)):
        step = predict_step_time_s(true, 1, workers, 128 / workers) * (1.0 + 0.08 * (i % 3))
        sync = 0.2 * step if workers > 1 else 0.0
        kept.record(ThroughputPoint(num_nodes=1, num_replicas=workers, local_bsz=128 / workers,
                                    step_time_s=step, sync_time_s=sync))
        JobModels(tmp_path / "state.db").record("j", Measurement(
            num_workers=workers, num_nodes=1, local_bsz=128 / workers, accum_steps=1,
            step_time_s=step, sync_time_s=sync), now=float(i))
        again = JobModels(tmp_path / "state.db").model("j")
        assert again.params == kept.params
        assert again.num_points == kept.num_points_fitted
        assert again.most_replicas_tried == kept.most_replicas_tried
    assert 1 < kept.num_fits < 7  # some steps refitted, some were predicted well enough


@pytest.mark.parametrize(("per_worker", "measured", "elastic", "max_workers", "offered"), [
    (1, 1, True, 64, EXPLORATION_FACTOR), (1, 3, True, 64, 3 * EXPLORATION_FACTOR),
    (1, 8, True, 8, 8), (2, 1, True, 32, 2 * EXPLORATION_FACTOR),
    (2, 2, True, 8, 16),  # capped at the job's max
    (1, 1, False, 8, 8),  # a fixed-size policy is shown the whole range, as in simulation
])
def test_the_live_view_offers_at_most_the_factor_times_the_most_measured(
        tmp_path, per_worker, measured, elastic, max_workers, offered):
    models = JobModels(tmp_path / "state.db")
    for workers in range(1, measured + 1):
        models.record("job", Measurement(num_workers=workers, num_nodes=1,
                                         local_bsz=128 / workers, accum_steps=1,
                                         step_time_s=1.0 / workers + 0.05,
                                         sync_time_s=0.05 if workers > 1 else 0.0), now=0.0)
    view = live_view(tmp_path, models.model("job"), min_workers=1,
                     max_workers=max_workers, per_worker=per_worker, elastic=elastic)
    assert view.max_gpus == offered


def test_a_live_job_grows_by_the_factor_over_what_it_measured(tmp_path):
    # One 1..16-worker job alone on 16 slots, measured at 1 worker before its first
    # round, then at whatever it runs on (its step nearly halves with every doubling):
    # each round it is offered at most EXPLORATION_FACTOR times the most workers it has
    # measured, so it reaches 16 by way of a size in between.
    h = harness(tmp_path, node("n0", slots=16))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=16))
    workers, measured, sizes = 1, 0, []
    for _ in range(60):
        if workers:
            h.controller.job_models.record(job_id, Measurement(
                num_workers=workers, num_nodes=1, local_bsz=128 / workers, accum_steps=1,
                step_time_s=1.0 / workers + 0.02 * (workers > 1),
                sync_time_s=0.02 * (workers > 1)), now=h.clock.now())
            measured = max(measured, workers)
        h.tick()
        workers = h.job(job_id).workers
        assert workers <= EXPLORATION_FACTOR * measured
        sizes.append(workers)
        if workers == 16:
            break
    assert sizes[-1] == 16 and any(1 < size < 16 for size in sizes)


def test_the_same_measurement_read_again_does_not_refit():
    # The live scheduler reads each job's last measurement every round: a point the fit
    # cannot match (here, far off any sensible model) must not cost a refit each time.
    learner = OnlineThroughput()
    one = ThroughputPoint(num_nodes=1, num_replicas=1, local_bsz=64, accum_steps=1,
                          step_time_s=1.0, sync_time_s=0.0)
    # Two replicas ten times faster at the same local batch: no model fits both.
    two = ThroughputPoint(num_nodes=1, num_replicas=2, local_bsz=64, accum_steps=1,
                          step_time_s=0.1, sync_time_s=0.05)
    assert learner.record(one) and learner.record(two)
    assert abs(learner.predict_step_time_s(two) - 0.1) > 0.01  # still off by over 10%
    assert not any(learner.record(two) for _ in range(4)) and learner.num_fits == 2
