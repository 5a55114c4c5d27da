"""A spot pool beside an autoscaled on-demand pool: the policy keeps the spot nodes it
wants, adds on-demand ones only past them, and every round is billed for what was kept.
Pure: small fixtures, no Ray."""

from __future__ import annotations

import dataclasses
import json

import pytest

from costsched.cli.main import main
from costsched.cost.prices import load_catalog
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import (
    Autoscaling,
    ClusterSnapshot,
    EfficiencyModel,
    JobView,
    NodeView,
)
from costsched.sim.outputs import summarise
from costsched.sim.simulator import ProfileThroughput, SimConfig
from costsched.sim.spot import SpotPool, SpotSimulator
from costsched.sim.spot_trace import load_spot_trace
from costsched.sim.workload import load_workload
from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD, Recorder, fixture_profiles

FLAKY = FIXTURE.parent / "spot" / "flaky-2-node.json"
INSTANCE = load_catalog().instance("g4dn.12xlarge")


def _node(node_id: str, spot: bool) -> NodeView:
    return NodeView(node_id=node_id, gpu_model="T4", num_gpus=4,
                    usd_per_hour=INSTANCE.node_usd_per_hour(spot), spot=spot)


def _snapshot(num_jobs: int, num_spot: int, bounds=(0, 4)) -> ClusterSnapshot:
    """``num_jobs`` one-GPU ncf jobs (each at most 1 GPU) on ``num_spot`` spot nodes."""
    ncf = fixture_profiles()["ncf"]
    jobs = tuple(JobView(name=f"j{i}", arrival_time_s=float(i), attained_service_gpu_s=0.0,
                         min_gpus=1, max_gpus=1, requested_gpus=1, requested_batch_size=256,
                         throughput=ProfileThroughput(ncf),
                         efficiency=EfficiencyModel(init_batch_size=ncf.init_batch_size,
                                                    max_batch_size=ncf.max_batch_size,
                                                    grad_sqr=1.0, grad_var=1.0))
                 for i in range(num_jobs))
    return ClusterSnapshot(time_s=0.0, round_index=0, jobs=jobs,
                           nodes=tuple(_node(f"spot-{i}", True) for i in range(num_spot)),
                           autoscaling=Autoscaling(min_nodes=bounds[0], max_nodes=bounds[1],
                                                   template=_node("auto", False)))


def test_spot_nodes_nothing_needs_are_released_and_no_on_demand_node_is_added():
    decision = CostAwarePolicy().decide(_snapshot(num_jobs=2, num_spot=4))
    assert not decision.nodes_to_add
    assert len(decision.nodes_to_remove) == 3  # 2 one-GPU jobs fit on one node
    used = {n for p in decision.placements.values() for n in p}
    assert used.isdisjoint(decision.nodes_to_remove) and all(n.startswith("spot") for n in used)


def test_on_demand_nodes_are_added_only_for_what_the_spot_nodes_cannot_hold():
    decision = CostAwarePolicy().decide(_snapshot(num_jobs=14, num_spot=2))
    assert not decision.nodes_to_remove
    # 14 one-GPU minimums: 8 on the 2 spot nodes, 6 more need 2 on-demand nodes.
    assert [n.spot for n in decision.nodes_to_add] == [False, False]
    assert sum(sum(p.values()) for p in decision.placements.values()) == 14


def test_the_on_demand_bounds_hold_beside_spot_nodes():
    decision = CostAwarePolicy().decide(_snapshot(num_jobs=40, num_spot=1, bounds=(0, 2)))
    assert len(decision.nodes_to_add) == 2  # capped at MAX = 2 on-demand nodes
    # MIN = 1 on-demand node is paid for anyway: the one job goes there, no spot is kept.
    kept = CostAwarePolicy().decide(_snapshot(num_jobs=1, num_spot=3, bounds=(1, 2)))
    assert [n.node_id for n in kept.nodes_to_add] == list(kept.placements["j0"])
    assert len(kept.nodes_to_remove) == 3


def _run(autoscale):
    config = SimConfig(instance=INSTANCE, num_nodes=1, elastic=True, autoscale=autoscale)
    pool = SpotPool(trace=load_spot_trace(FLAKY), num_nodes=2, checkpoint_interval_s=600.0)
    recorder = Recorder(CostAwarePolicy())
    sim = SpotSimulator(config=config, profiles=fixture_profiles(),
                        workload=load_workload(FIXTURE_WORKLOAD), policy=recorder, pool=pool)
    return recorder, sim.run()


def _kept(recorder) -> list[tuple[float, int, int]]:
    """Per round, from what the policy was shown and decided: (time_s, spot nodes kept,
    on-demand nodes kept)."""
    rounds = []
    for snapshot, decision in recorder.rounds:
        gone = set(decision.nodes_to_remove)
        kept = [n for n in snapshot.nodes if n.node_id not in gone] + list(decision.nodes_to_add)
        spot = sum(n.spot for n in kept)
        rounds.append((snapshot.time_s, spot, len(kept) - spot))
    return rounds


@pytest.fixture(scope="module")
def autoscaled():
    return _run((0, 2))


def test_each_round_is_billed_for_the_nodes_kept_at_the_catalogs_two_prices(autoscaled):
    recorder, result = autoscaled
    summary = summarise(result, policy="cost-aware", workload="w")
    end_s = max(j.finish_s for j in result.jobs)
    kept = _kept(recorder)
    starts = [t for t, _, _ in kept] + [end_s]
    spot_s = od_s = 0.0
    for i, (time_s, spot, on_demand) in enumerate(kept):
        seconds = min(starts[i + 1], end_s) - time_s
        spot_s, od_s = spot_s + spot * seconds, od_s + on_demand * seconds
        assert 0 <= on_demand <= 2
    assert summary["spot_node_hours"] == pytest.approx(spot_s / 3600)
    assert summary["on_demand_node_hours"] == pytest.approx(od_s / 3600)
    assert summary["cost_usd"] == pytest.approx(spot_s / 3600 * INSTANCE.spot_usd_per_hour
                                                + od_s / 3600 * INSTANCE.on_demand_usd_per_hour)


def test_only_a_drop_below_the_nodes_kept_preempts(autoscaled):
    recorder, result = autoscaled
    raw = json.loads(FLAKY.read_text())  # the grant, read from the trace file itself
    gap, counts = raw["metadata"]["gap_seconds"], raw["data"]
    kept = _kept(recorder)
    granted = [min(counts[int(t // gap) % len(counts)], 2) for t, _, _ in kept]
    assert any(k < g for (_, k, _), g in zip(kept, granted, strict=True))  # some released
    expected = sum(max(kept[i][1] - granted[i + 1], 0) for i in range(len(kept) - 1))
    assert result.spot.num_nodes_preempted == expected


def test_releasing_idle_spot_nodes_costs_less_than_holding_them_at_a_like_jct(autoscaled):
    _, scaled = _run((1, 1))  # the same single on-demand node: only the spot releases differ
    _, fixed = _run(None)
    scaled_s, fixed_s = (summarise(r, policy="p", workload="w") for r in (scaled, fixed))
    assert scaled_s["cost_usd"] < fixed_s["cost_usd"]
    assert scaled_s["mean_jct_s"] <= 1.2 * fixed_s["mean_jct_s"]


def test_the_cli_runs_a_spot_pool_beside_autoscaled_on_demand_nodes(tmp_path, capsys):
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--spot-trace", str(FLAKY), "--autoscale", "0:2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "cost-aware (autoscale 0:2)" in out and "preemptions" in out


@pytest.mark.parametrize(("preemptions", "market"), [(200, False), (0, True)])
def test_with_spot_nodes_only_a_job_spot_costs_more_for_goes_on_a_new_on_demand_node(
        preemptions, market):
    """No on-demand node yet, but autoscaling may add them: a job whose checkpoints are
    far apart goes on-demand when preemptions are frequent (about 10 per node-hour: the
    work it would redo costs more than the spot discount), and stays on spot when rare."""
    base = _snapshot(num_jobs=1, num_spot=2)
    job = dataclasses.replace(base.jobs[0], checkpoint_interval_s=7200.0, restart_s=600.0)
    snapshot = dataclasses.replace(base, jobs=(job,), time_s=3600.0, round_index=60,
                                   spot_preemptions=preemptions, spot_node_hours=20.0)
    decision = CostAwarePolicy().decide(snapshot)
    (node_id,) = decision.placements["j0"]
    if market:
        assert node_id.startswith("spot") and not decision.nodes_to_add
    else:
        assert [n.node_id for n in decision.nodes_to_add] == [node_id]
        assert not decision.nodes_to_add[0].spot
        assert len(decision.nodes_to_remove) == 2  # the spot nodes it does not need
