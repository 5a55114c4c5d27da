"""Checkpoints in the spot simulator: each periodic one pauses training for its cost, and
on spot a job checkpoints at Young's interval for the preemption rate seen so far. Pure:
small fixtures, no Ray; expected figures are worked out here from the rules as the README
states them, not read from the simulator."""

from __future__ import annotations

import math

import pytest

from costsched.policy.spot_choice import checkpoint_interval_s
from costsched.sim.spot_trace import SpotTrace
from costsched.sim.workload import JobSpec
from tests.support.sim_fixture import fixture_profiles
from tests.test_sim_spot import spot_sim

ROUND_S = 60.0
RESTART_S = 30.0


def _solo() -> JobSpec:
    return JobSpec(name="solo", submit_time_s=0, application="ncf", num_replicas=1,
                   batch_size=256)


def _work_s() -> float:
    ncf = fixture_profiles()["ncf"]
    return ncf.target_progress * ncf.step_time_s((1,), 256)[0]


def _walk(work_s: float, *, every_s: float, cost_s: float) -> tuple[float, int]:
    """(seconds to finish, periodic checkpoints) of a job that starts with a restart and
    then holds one GPU: each round first pays what pause is left, then trains; once it has
    held ``every_s`` since the last, the next round starts with a checkpoint of ``cost_s``."""
    work_left, pause_left, held, t, checkpoints = work_s, RESTART_S, 0.0, 0.0, 0
    while True:
        paused = min(pause_left, ROUND_S)
        pause_left -= paused
        trained = min(ROUND_S - paused, work_left)
        work_left -= trained
        if work_left <= 0:
            return t + paused + trained, checkpoints
        held, t = held + ROUND_S, t + ROUND_S
        if held >= every_s - 1e-9:
            held, checkpoints, pause_left = 0.0, checkpoints + 1, pause_left + cost_s


def test_youngs_interval_is_sqrt_of_twice_the_cost_times_the_mean_time_between_hits():
    # 0.1 preemptions per node-hour on 2 nodes: a hit every 18,000 s; sqrt(2 x 10 x 18000).
    assert checkpoint_interval_s(preemptions_per_node_hour=0.1, num_nodes=2,
                                 checkpoint_cost_s=10.0, longest_s=1800.0) == pytest.approx(600)
    # Never longer than the job's own interval; that interval off spot, or when free.
    assert checkpoint_interval_s(preemptions_per_node_hour=0.001, num_nodes=1,
                                 checkpoint_cost_s=10.0, longest_s=1800.0) == 1800.0
    for nodes, cost in ((0, 10.0), (2, 0.0)):
        assert checkpoint_interval_s(preemptions_per_node_hour=0.1, num_nodes=nodes,
                                     checkpoint_cost_s=cost, longest_s=1800.0) == 1800.0


@pytest.mark.parametrize("cost_s", [0.0, 10.0, 25.0])
def test_each_periodic_checkpoint_pauses_training_for_its_cost(cost_s):
    # No spot at all: one on-demand node; a checkpoint at the start of the round after the
    # job has held its GPU 300 s since the last, each pausing it cost_s.
    trace = SpotTrace(path="t", gap_s=60.0, counts=(0,) * 10_000)
    sim = spot_sim([_solo()], "fifo", trace, spot_nodes=1, checkpoint_interval_s=300.0,
                   checkpoint_cost_s=cost_s)
    result = sim.run()
    finish, checkpoints = _walk(_work_s(), every_s=300.0, cost_s=cost_s)
    job = result.jobs[0]
    assert checkpoints >= 4
    assert job.jct_s == pytest.approx(finish)
    assert result.spot.num_checkpoints == checkpoints
    assert result.spot.checkpoint_paused_gpu_s == pytest.approx(cost_s * checkpoints)
    assert job.lost_gpu_hours == 0.0


def test_on_spot_a_job_checkpoints_at_youngs_interval_and_loses_less_than_at_a_fixed_one():
    # One spot node for 20 one-minute ticks, then gone; one on-demand node. The job starts
    # on spot at t=0 and is preempted at t=1200, before its own 1800 s interval is up.
    assert _work_s() > 1200
    trace = SpotTrace(path="t", gap_s=60.0, counts=(1,) * 20 + (0,) * 10_000)
    runs = {fixed: spot_sim([_solo()], "fifo", trace, spot_nodes=1,
                            checkpoint_interval_s=1800.0, checkpoint_cost_s=10.0,
                            fixed_interval=fixed).run()
            for fixed in (True, False)}
    # Young's interval at each round's start: the rate is the prior (0.1 per node-hour,
    # worth 10 node-hours) over the spot node-hours so far (one node since 0).
    checkpoint_at = None
    for end in range(60, 1201, 60):
        rate = 0.1 * 10 / (10 + end / 3600)
        if end >= math.sqrt(2 * 10.0 * 3600 / rate) - 1e-9:
            checkpoint_at = end
            break
    assert checkpoint_at is not None and checkpoint_at < 1200
    fixed, young = runs[True].jobs[0], runs[False].jobs[0]
    assert fixed.preemptions == young.preemptions == 1
    assert fixed.lost_gpu_hours == pytest.approx(1200 / 3600)
    assert young.lost_gpu_hours == pytest.approx((1200 - checkpoint_at) / 3600)
    assert young.jct_s < fixed.jct_s


def test_with_a_notice_a_job_keeps_its_own_interval_on_spot():
    # The notice stops it at a checkpoint before each preemption: checkpointing more
    # often would only pause it. So it runs exactly as with the interval fixed.
    trace = SpotTrace(path="t", gap_s=60.0, counts=(1,) * 20 + (0,) * 10_000)
    runs = [spot_sim([_solo()], "fifo", trace, spot_nodes=1, checkpoint_interval_s=1800.0,
                     checkpoint_cost_s=10.0, fixed_interval=fixed, notice_s=120.0).run()
            for fixed in (True, False)]
    assert runs[0].spot.num_checkpoints == runs[1].spot.num_checkpoints == 0
    assert runs[0].jobs[0].lost_gpu_hours == pytest.approx(120 / 3600)
    assert runs[1].jobs[0].jct_s == runs[0].jobs[0].jct_s


@pytest.mark.parametrize("fixed", [True, False])
def test_a_checkpoint_due_when_the_spot_node_goes_is_not_taken(fixed):
    # Interval 300 s (Young's, ~850 s, is longer), and the node goes at t=600, the round
    # start when the second checkpoint falls due: the preemption comes first, so the job
    # loses the 300 s since the first, and pauses for that one only.
    trace = SpotTrace(path="t", gap_s=60.0, counts=(1,) * 10 + (0,) * 10_000)
    result = spot_sim([_solo()], "fifo", trace, spot_nodes=1, checkpoint_interval_s=300.0,
                      checkpoint_cost_s=10.0, fixed_interval=fixed).run()
    job = result.jobs[0]
    assert job.preemptions == 1
    assert job.lost_gpu_hours == pytest.approx(300 / 3600)
    # After the move (a restart from a fresh checkpoint) it runs on on-demand; count its
    # checkpoints there: every 300 s held, till the end.
    left_s = _work_s() - (300 - RESTART_S)  # trained by the kept checkpoint at 300 s
    after = _walk(left_s, every_s=300.0, cost_s=10.0)[1]
    assert result.spot.num_checkpoints == 1 + after
    assert result.spot.checkpoint_paused_gpu_s == pytest.approx(10.0 * (1 + after))
