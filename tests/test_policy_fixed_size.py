"""fifo and las on hand-made clusters whose right answer is stated in each test."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.errors import ConfigError
from costsched.policy.fifo import FifoPolicy
from costsched.policy.las import LasPolicy
from costsched.policy.packing import packed_shape, place_jobs
from costsched.policy.validate import check_decision
from tests.support.policy_fakes import gpus, job, nodes, snapshot


def rigid(name: str, size: int, **kw):
    return job(name, min_gpus=size, max_gpus=size, requested_gpus=size, **kw)


def test_fifo_runs_in_arrival_order_and_backfills_a_small_job():
    # 8 GPUs: A (6) starts; B (4, rigid) does not fit in the 2 left; C (2) backfills.
    jobs = [rigid("A", 6, arrival_time_s=0), rigid("B", 4, arrival_time_s=1),
            rigid("C", 2, arrival_time_s=2)]
    snap = snapshot(jobs, nodes(2))
    decision = FifoPolicy().decide(snap)
    assert (gpus(decision, "A"), gpus(decision, "B"), gpus(decision, "C")) == (6, 0, 2)
    assert decision.batch_sizes == {"A": 32, "C": 32}
    check_decision(snap, decision, elastic=False)


def test_fifo_priority_beats_arrival():
    jobs = [job("early", requested_gpus=4, arrival_time_s=0),
            job("urgent", requested_gpus=4, arrival_time_s=5, priority=1)]
    decision = FifoPolicy().decide(snapshot(jobs, nodes(1)))
    assert gpus(decision, "urgent") == 4 and gpus(decision, "early") == 0


def test_las_new_job_preempts_one_with_more_attained_service():
    old = job("old", requested_gpus=4, arrival_time_s=0, attained_service_gpu_s=1e6)
    new = job("new", requested_gpus=4, arrival_time_s=100)
    decision = LasPolicy().decide(snapshot([old, new], nodes(1), {"old": {"n0": 4}}))
    assert gpus(decision, "new") == 4 and gpus(decision, "old") == 0


def test_las_is_fifo_within_a_queue():
    # Both below the first threshold: the earlier arrival wins, whatever its service.
    first = job("first", requested_gpus=4, arrival_time_s=0, attained_service_gpu_s=3000)
    second = job("second", requested_gpus=4, arrival_time_s=10, attained_service_gpu_s=0)
    decision = LasPolicy().decide(snapshot([second, first], nodes(1)))
    assert gpus(decision, "first") == 4 and gpus(decision, "second") == 0


def test_las_starvation_promotion_lifts_a_long_waiting_job():
    # Attained 16h of GPU-time on 1 GPU (run 57,600 s), waited far longer than that.
    starved = job("starved", attained_service_gpu_s=57_600 * 2, arrival_time_s=0)
    fresh = job("fresh", arrival_time_s=400_000, attained_service_gpu_s=60_000)
    policy = LasPolicy(starvation_factor=1.0)
    assert policy.queue_of(starved, time_s=500_000) == 0
    assert policy.queue_of(fresh, time_s=500_000) == 1


def test_las_rejects_unsorted_thresholds():
    with pytest.raises(ConfigError):
        LasPolicy(queue_thresholds_gpu_s=(10.0, 5.0))


def test_running_job_keeps_its_nodes():
    decision = FifoPolicy().decide(snapshot(
        [job("A", requested_gpus=2)], nodes(2), {"A": {"n1": 2}}))
    assert decision.placements["A"] == {"n1": 2}


def test_packing_uses_whole_nodes_then_best_fit():
    placed = place_jobs([("big", 6), ("small", 2)], nodes(3), {})
    assert sorted(placed["big"].values()) == [2, 4]
    assert len(placed["small"]) == 1
    assert packed_shape(10, 4) == (4, 4, 2)


def test_a_job_kept_split_over_two_nodes_moves_onto_one_once_a_node_frees_up():
    # "split" was placed 2 + 2 when the cluster was full; "gone" has finished, so n0
    # is free. Kept at 4 GPUs, "split" moves whole onto one node (a restart it gains
    # from: its replicas no longer synchronise across nodes); "stay" keeps its node.
    cluster = nodes(3)
    names = [n.node_id for n in cluster]
    current = {"split": {names[1]: 2, names[2]: 2}, "stay": {names[1]: 2}}
    placed = place_jobs([("split", 4), ("stay", 2)], cluster, current)
    assert placed["stay"] == {names[1]: 2}
    assert placed["split"] == {names[0]: 4}
    # With no node able to hold it whole, it keeps its two nodes (no restart for nothing).
    full = current | {"other": {names[0]: 4}, "third": {names[2]: 2}}
    placed = place_jobs([("split", 4), ("stay", 2), ("other", 4), ("third", 2)], cluster, full)
    assert placed == full
    # An 8-GPU job on three nodes moves onto two whole ones.
    wide = {"wide": {names[0]: 2, names[1]: 4, names[2]: 2}}
    placed = place_jobs([("wide", 8)], nodes(3), wide)
    assert sorted(placed["wide"].values()) == [4, 4]


def test_a_split_job_is_not_moved_from_spot_gpus_onto_dearer_on_demand_ones():
    spot = tuple(dataclasses.replace(n, node_id=f"s{i}", spot=True)
                 for i, n in enumerate(nodes(2)))
    cluster = spot + nodes(2)  # s0, s1 spot; n0, n1 on-demand; 4 GPUs each
    current = {"x": {"s1": 2, "n0": 2}, "a": {"s0": 4}, "b": {"s1": 2}}
    targets = [("x", 4), ("a", 4), ("b", 2)]
    # n1 could hold x whole, but on 4 on-demand GPUs instead of 2: it stays.
    assert place_jobs(targets, cluster, current)["x"] == current["x"]
    # Once b leaves s1, x moves onto s1 whole: fewer nodes, no more on-demand GPUs.
    assert place_jobs(targets[:2], cluster, current)["x"] == {"s1": 4}


def test_over_budget_job_gets_nothing():
    broke = job("broke", requested_gpus=1, budget_usd=1.0, spent_usd=1.0)
    decision = FifoPolicy().decide(snapshot([broke], nodes(1)))
    assert gpus(decision, "broke") == 0


@pytest.mark.parametrize("policy", [FifoPolicy, LasPolicy])
def test_an_elastic_job_starts_at_the_largest_size_that_fits(policy):
    # 8 GPUs: A (rigid 6) starts; B may run on 1..4 and starts on the 2 left.
    jobs = [rigid("A", 6, arrival_time_s=0), job("B", min_gpus=1, max_gpus=4,
                                                 requested_gpus=4, arrival_time_s=1)]
    snap = snapshot(jobs, nodes(2))
    decision = policy().decide(snap)
    assert (gpus(decision, "A"), gpus(decision, "B")) == (6, 2)
    check_decision(snap, decision, elastic=False)


def test_an_elastic_job_is_sized_in_whole_workers_and_keeps_its_size_while_it_runs():
    two_gpu_workers = dataclasses.replace(
        job("W", min_gpus=2, max_gpus=8, requested_gpus=8, arrival_time_s=1),
        gpus_per_worker=2)
    lone = job("L", requested_gpus=1, arrival_time_s=0)
    # 8 GPUs, L (first in line) holds 1: W starts on 3 x 2 GPUs (not 7)...
    decision = FifoPolicy().decide(snapshot([two_gpu_workers, lone], nodes(2),
                                            {"L": {"n1": 1}}))
    assert gpus(decision, "W") == 6
    # ...and stays on 6 once L is gone, rather than restarting on 8.
    decision = FifoPolicy().decide(snapshot([two_gpu_workers], nodes(2),
                                            {"W": decision.placements["W"]}))
    assert gpus(decision, "W") == 6
