"""cost-aware and the goodput model on small cases whose right answer is stated."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.policy.cost_aware import CostAwarePolicy, Growth
from costsched.policy.goodput import best_goodput
from costsched.policy.snapshot import Autoscaling, EfficiencyModel
from costsched.policy.validate import check_decision
from tests.support.policy_fakes import FakeThroughput, gpus, job, no_scaling, nodes, snapshot


def test_gain_is_one_at_the_initial_batch_and_bounded_by_the_scale():
    eff = EfficiencyModel(init_batch_size=32, max_batch_size=4096, grad_sqr=1.0, grad_var=3.0)
    assert eff.gain(32) == pytest.approx(1.0)
    # phi = var / sqr = 3: gain(4 x B0) = (3 + 1) / (3 / 4 + 1) = 16 / 7.
    assert eff.gain(128) == pytest.approx(16 / 7)
    assert 1.0 < eff.gain(4096) < 4096 / 32


def test_goodput_picks_the_large_batch_when_gradients_are_noisy():
    fast = FakeThroughput(lambda p, lb: 1.0, choices=(32, 64, 128))
    noisy = job("noisy", throughput=fast, grad_sqr=1e-9, grad_var=1.0)
    clean = job("clean", throughput=fast, grad_sqr=1.0, grad_var=1e-9)
    assert best_goodput(noisy, 2, 4).batch_size == 256  # efficiency ~1: biggest batch
    # No noise: a bigger batch makes no more progress per step, so all tie at gain 1.
    assert best_goodput(clean, 2, 4).goodput == pytest.approx(1.0, rel=1e-6)


def test_goodput_respects_the_max_batch_size():
    big = job("big", throughput=FakeThroughput(lambda p, lb: 1.0, choices=(32, 64)),
              max_batch_size=128)
    assert best_goodput(big, 2, 4).batch_size == 128
    assert best_goodput(big, 8, 4).goodput == 0.0  # 8 x 32 > 128: unusable


def test_the_scalable_job_gets_the_spare_gpus():
    snap = snapshot([job("scales"), job("flat", throughput=FakeThroughput(no_scaling))],
                    nodes(2))
    decision = CostAwarePolicy(node_shapes=False).decide(snap)
    assert gpus(decision, "flat") == 1
    assert gpus(decision, "scales") == 7
    check_decision(snap, decision, elastic=True)


@pytest.mark.parametrize("tells_work_left", [True, False])
def test_spare_gpus_go_to_the_job_nearest_its_end_when_jobs_say_what_is_left(tells_work_left):
    # The old job has had 100 GPU-hours and needs 1 more; the new one has had none and
    # needs 100. Told what is left, the policy speeds the job that ends soon (SRPT);
    # not told, it can only guess by service had (LAS) and speeds the new one.
    old = job("old", attained_service_gpu_s=100 * 3600.0)
    new = job("new")
    if tells_work_left:
        one_gpu = best_goodput(old, 1, 4).goodput  # work per second on one GPU
        old = dataclasses.replace(old, remaining_work=1 * 3600.0 * one_gpu)
        new = dataclasses.replace(new, remaining_work=100 * 3600.0 * one_gpu)
    snap = snapshot([old, new], nodes(1))
    policy = CostAwarePolicy(node_shapes=False)
    decision = policy.decide(snap)
    favoured, other = ("old", "new") if tells_work_left else ("new", "old")
    assert gpus(decision, favoured) == 3 and gpus(decision, other) == 1
    # The weight itself: tau / (tau + hours left on one GPU), tau = 16 GPU-hours; else
    # tau / (tau + hours of service had).
    growth = Growth(policy, snap, 4)
    expected = {"old": 16 / 17, "new": 16 / 116} if tells_work_left else {
        "old": 16 / 116, "new": 1.0}
    assert {j.name: growth.weight(j) for j in (old, new)} == pytest.approx(expected)


def test_node_shapes_never_split_a_job_over_nodes():
    # 1 GPU is held by a job that does not scale; the scalable one may take a whole
    # node (4), not the 7 that would straddle both nodes, nor 3 on the shared node.
    snap = snapshot([job("scales"), job("flat", throughput=FakeThroughput(no_scaling))],
                    nodes(3))
    decision = CostAwarePolicy().decide(snap)
    assert gpus(decision, "flat") == 1
    assert gpus(decision, "scales") == 8
    assert sorted(decision.placements["scales"].values()) == [4, 4]
    check_decision(snap, decision, elastic=True)


def test_replicas_are_packed_onto_few_nodes():
    snap = snapshot([job("a", max_gpus=4), job("b", max_gpus=4)], nodes(2))
    decision = CostAwarePolicy().decide(snap)
    assert [len(decision.placements[n]) for n in ("a", "b")] == [1, 1]


@pytest.mark.parametrize("gain_over_4_gpus, resized", [(1.01, False), (1.5, True)])
def test_resize_only_when_the_gain_pays_the_restart(gain_over_4_gpus, resized):
    # A 30 s restart over a 600 s horizon costs 5%: a 1% gain is not worth it, 50% is.
    def step_time(placement, local_bsz):
        # Goodput is k / step (efficiency ~1): 4 at k = 4, 4 x gain for any k > 4.
        return 1.0 if sum(placement) <= 4 else sum(placement) / (4 * gain_over_4_gpus)
    running = job("running", throughput=FakeThroughput(step_time), arrival_time_s=900.0)
    decision = CostAwarePolicy().decide(
        snapshot([running], nodes(2), {"running": {"n0": 4}}))
    assert (decision.placements["running"] != {"n0": 4}) is resized


def test_min_max_priority_and_budget_are_respected():
    jobs = [job("low", min_gpus=3, max_gpus=3), job("high", min_gpus=3, priority=1),
            job("broke", budget_usd=0.5, spent_usd=0.5)]
    decision = CostAwarePolicy().decide(snapshot(jobs, nodes(1)))
    assert gpus(decision, "high") == 4  # admitted first, then takes the spare GPU
    assert gpus(decision, "low") == 0  # its minimum of 3 no longer fits
    assert gpus(decision, "broke") == 0


def test_autoscaling_shrinks_an_idle_cluster_and_grows_for_scalable_work():
    template = nodes(1)[0]
    scaling = Autoscaling(min_nodes=1, max_nodes=8, template=dataclasses.replace(
        template, node_id="auto"))
    idle = CostAwarePolicy().decide(snapshot([], nodes(4), autoscaling=scaling))
    assert len(idle.nodes_to_remove) == 3 and not idle.nodes_to_add
    busy_snap = snapshot([job(f"j{i}") for i in range(4)], nodes(2), autoscaling=scaling)
    busy = CostAwarePolicy().decide(busy_snap)
    assert len(busy.nodes_to_add) == 6
    check_decision(busy_snap, busy, elastic=True)
    assert sum(gpus(busy, f"j{i}") for i in range(4)) == 32
