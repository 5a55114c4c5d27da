"""Autoscaling that pays: hysteresis on the node count, emptiest nodes removed first,
and a node count set by what an hour of JCT is worth."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.cli.main import main
from costsched.errors import ConfigError
from costsched.policy.autoscale_hysteresis import NodeCountHysteresis, NodeCountSmoother
from costsched.policy.cost_aware import CostAwarePolicy, Move, usd_per_job_hour_saved
from costsched.policy.snapshot import Autoscaling
from costsched.policy.validate import check_decision
from costsched.sim.workload import load_workload
from tests.support.policy_fakes import FakeThroughput, job, nodes, snapshot
from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD, simulate


def smoother(min_nodes: int = 4, max_nodes: int = 16, **settings) -> NodeCountSmoother:
    return NodeCountSmoother(NodeCountHysteresis(**settings), min_nodes=min_nodes,
                             max_nodes=max_nodes)


def follow(smooth: NodeCountSmoother, wanted: list[int], current: int) -> list[int]:
    """The node count after each round, acting on what the smoother returns."""
    counts = []
    for count in wanted:
        current = smooth.update(wanted=count, current=current, elapsed_s=60.0)
        counts.append(current)
    return counts


def test_an_alternating_wanted_count_does_not_flap_the_cluster():
    # +-3 nodes every 60 s round: a x 3 = 0.39 < the 0.5-node band at the defaults.
    counts = follow(smoother(), [5, 11] * 30, current=8)
    assert counts == [8] * 60
    # A wider band takes wider swings.
    assert follow(smoother(band_nodes=1.5), [2, 14] * 30, current=8) == [8] * 60


@pytest.mark.parametrize("start, new", [(8, 12), (12, 5), (8, 9), (4, 16)])
def test_a_sustained_change_is_followed_in_one_step(start, new):
    counts = follow(smoother(), [new] * 20, current=start)
    assert counts[-1] == new
    changes = [i for i in range(1, len(counts)) if counts[i] != counts[i - 1]]
    changes += [0] if counts[0] != start else []
    assert len(changes) == 1  # straight to the new count, not node by node
    # Within a few 60 s rounds (six for one node at the default 300 s half-life).
    assert counts.index(new) <= 5


def test_a_one_round_spike_is_ignored_but_a_longer_half_life_waits_longer():
    assert follow(smoother(), [11, 8, 8, 8], current=8) == [8, 8, 8, 8]
    fast, slow = (follow(smoother(half_life_s=s), [12] * 10, current=8) for s in (60, 900))
    assert fast.index(12) < slow.index(12)


def test_the_count_stays_within_the_bounds():
    assert follow(smoother(), [30] * 5, current=8)[-1] == 16
    assert follow(smoother(), [0] * 20, current=8)[-1] == 4
    assert follow(smoother(), [20], current=20) == [16]  # brought back at once


@pytest.mark.parametrize("settings", [{"half_life_s": 0}, {"half_life_s": float("inf")},
                                      {"band_nodes": -1}])
def test_bad_hysteresis_settings_are_config_errors(settings):
    with pytest.raises(ConfigError):
        NodeCountHysteresis(**settings)


def scaling(target_nodes=None, max_nodes=8) -> Autoscaling:
    return Autoscaling(min_nodes=1, max_nodes=max_nodes, target_nodes=target_nodes,
                       template=dataclasses.replace(nodes(1)[0], node_id="auto"))


def test_empty_nodes_are_removed_before_any_node_holding_work():
    # n1 runs job a (4 GPUs); n3 holds 2 GPUs of work the policy does not control.
    cluster = list(nodes(4))
    cluster[3] = dataclasses.replace(cluster[3], reserved_gpus=2)
    busy = job("a", min_gpus=4, max_gpus=4)
    placed = {"a": {"n1": 4}}
    keep_two = snapshot([busy], cluster, placed, autoscaling=scaling(target_nodes=2))
    decision = CostAwarePolicy().decide(keep_two)
    assert decision.nodes_to_remove == ("n0", "n2")
    assert decision.placements["a"] == {"n1": 4}  # the job is not restarted
    check_decision(keep_two, decision, elastic=True)
    # With no empty node left, the one holding fewest GPUs goes.
    keep_one = snapshot([busy], cluster, placed, autoscaling=scaling(target_nodes=1))
    assert CostAwarePolicy().decide(keep_one).nodes_to_remove == ("n0", "n2", "n3")


def sublinear(placement, local_bsz):
    """Each replica adds 10% to the step: speedup k / (1 + 0.1 (k - 1)), 6.4 at 16 GPUs."""
    return 0.01 * local_bsz * (1 + 0.1 * (sum(placement) - 1))


def nodes_wanted(usd_per_job_hour: float, throughput, priority: int = 0) -> int:
    snap = snapshot([job("j", throughput=FakeThroughput(throughput), priority=priority)],
                    nodes(1), autoscaling=scaling(max_nodes=16))
    return CostAwarePolicy(usd_per_job_hour=usd_per_job_hour).nodes_wanted(snap)


def test_an_hour_of_a_higher_priority_job_is_worth_2_to_the_priority_hours():
    # At $4 a job-hour a priority-2 job is sized as a priority-0 one at $16, and a
    # priority -1 one as at $2: 3, 2 and 1 nodes of this sublinear job.
    assert [nodes_wanted(4.0, sublinear, priority=p) for p in (2, 0, -1)] == [
        nodes_wanted(16.0, sublinear), nodes_wanted(4.0, sublinear),
        nodes_wanted(2.0, sublinear)] == [3, 2, 1]


def test_a_job_hour_worth_more_buys_more_nodes():
    counts = [nodes_wanted(usd, sublinear) for usd in (0.5, 4.0, 40.0, 400.0)]
    assert counts == sorted(counts) and len(set(counts)) == 4
    # GPUs at $1 an hour: 4 -> 8 GPUs costs 8 x 3.08 / 1.62 - 4 = 3.6 GPU-hours per
    # job-hour saved, 8 -> 16 costs 14: at $4 a job-hour, 2 nodes.
    assert counts[:2] == [1, 2]


def test_linear_scaling_is_worth_any_price():
    # The same GPU-hours, sooner: growing a job that scales linearly costs nothing.
    assert nodes_wanted(0.01, lambda placement, local_bsz: 0.01 * local_bsz) == 16
    linear = Move(gpus_before=4, speedup_before=4.0, num_gpus=4, speedup_gained=4.0)
    assert usd_per_job_hour_saved(linear, 1.0) == pytest.approx(0.0)
    # Doubling 4 -> 8 GPUs for 50% more speed: 8 - 4 more GPU-hours per 1/3 of the time.
    half = Move(gpus_before=4, speedup_before=4.0, num_gpus=4, speedup_gained=2.0)
    assert usd_per_job_hour_saved(half, 1.0) == pytest.approx(4.0)
    flat = Move(gpus_before=4, speedup_before=4.0, num_gpus=4, speedup_gained=0.0)
    assert usd_per_job_hour_saved(flat, 1.0) == float("inf")


def test_the_simulator_resizes_less_often_with_hysteresis():
    # Exploring by doubling (Pollux's rule) makes the wanted node count swing here.
    jobs = load_workload(FIXTURE_WORKLOAD)

    def node_changes(**config) -> int:
        counts = [nodes for _, _, nodes, _ in simulate(jobs, "cost-aware", num_nodes=1,
                                                       autoscale=(1, 3), explore_factor=2,
                                                       **config).timeline]
        return sum(a != b for a, b in zip(counts, counts[1:], strict=False))

    smoothed = node_changes(autoscale_hysteresis=NodeCountHysteresis())
    assert smoothed < node_changes()


@pytest.mark.parametrize("flags, words", [
    (["--autoscale", "4:16", "--usd-per-job-hour", "0"], "--usd-per-job-hour wants"),
    (["--autoscale", "4:16", "--usd-per-job-hour", "four"], "--usd-per-job-hour wants"),
    (["--autoscale", "4:16", "--usd-per-job-hour", "inf"], "--usd-per-job-hour wants"),
    (["--autoscale", "4:16", "--autoscale-half-life", "-60"], "--autoscale-half-life wants"),
    (["--usd-per-job-hour", "4"], "add --autoscale"),
])
def test_bad_autoscale_flags_are_one_line_errors(tmp_path, capsys, flags, words):
    out = tmp_path / "out"
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and words in err[0] and err[0].startswith("costsched simulate: error")
    assert not out.exists()
