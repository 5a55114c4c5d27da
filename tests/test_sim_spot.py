"""The spot pool replayed from a capacity trace: preemptions, capacity, the market choice,
dollars, bad input, and spot off changing nothing. Pure: small fixtures, no Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from costsched.cli.main import main
from costsched.cost.prices import load_catalog
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.registry import ELASTIC, make_policy
from costsched.policy.snapshot import ClusterSnapshot, EfficiencyModel, JobView, NodeView
from costsched.policy.spot_choice import choose_markets
from costsched.sim.outputs import SPOT_JOB_COLUMNS, SPOT_SUMMARY_KEYS, jobs_frame, summarise
from costsched.sim.simulator import ProfileThroughput, SimConfig
from costsched.sim.spot import SpotPool, SpotSimulator
from costsched.sim.spot_trace import SpotTrace, load_spot_trace
from costsched.sim.workload import JobSpec, load_workload
from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD, fixture_profiles, simulate

SPOT_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "spot"
FLAKY = SPOT_FIXTURES / "flaky-2-node.json"
SHARED_SPOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "spot"
INSTANCE = load_catalog().instance("g4dn.12xlarge")


def spot_sim(workload, policy: str, trace: SpotTrace, *, num_nodes: int = 1,
             spot_nodes: int = 2, checkpoint_interval_s: float = 600.0, seed: int = 0,
             notice_s: float = 0.0, checkpoint_cost_s: float = 0.0,
             fixed_interval: bool = False):
    """A spot simulation; checkpoints cost nothing unless ``checkpoint_cost_s`` (and the
    interval then stays ``checkpoint_interval_s``: Young's interval needs a cost)."""
    config = SimConfig(instance=INSTANCE, num_nodes=num_nodes, elastic=policy in ELASTIC)
    pool = SpotPool(trace=trace, num_nodes=spot_nodes,
                    checkpoint_interval_s=checkpoint_interval_s, seed=seed, notice_s=notice_s,
                    checkpoint_cost_s=checkpoint_cost_s, fixed_interval=fixed_interval)
    return SpotSimulator(config=config, profiles=fixture_profiles(), workload=workload,
                         policy=make_policy(policy), pool=pool)


def test_a_preempted_job_loses_exactly_the_work_since_its_last_checkpoint():
    ncf = fixture_profiles()["ncf"]
    step_s = ncf.step_time_s((1,), 256)[0]
    solo = JobSpec(name="solo", submit_time_s=0, application="ncf", num_replicas=1,
                   batch_size=256)
    # One spot node for 8 one-minute ticks, then gone for good; checkpoints every 300 s.
    trace = SpotTrace(path="t", gap_s=60.0, counts=(1,) * 8 + (0,) * 10_000)
    sim = spot_sim([solo], "fifo", trace, spot_nodes=1, checkpoint_interval_s=300.0)
    result = sim.run()
    job = result.jobs[0]
    assert job.preemptions == 1
    # Runs on spot from t=0 (30 s restart, then steps); the checkpoint falls at the end of
    # the round where it has held the GPU 300 s (t=300); preempted at t=480: the 180 s
    # since are lost, then it restarts on the on-demand node (30 s) and runs to the end.
    assert job.lost_gpu_hours == pytest.approx(180.0 / 3600)
    assert result.spot.lost_gpu_s == pytest.approx(180.0)
    assert ncf.target_progress * step_s > 480  # it was still running when preempted
    assert job.jct_s == pytest.approx(30.0 + ncf.target_progress * step_s + 180.0 + 30.0)
    assert job.restarts == 1


@pytest.mark.parametrize(("notice_s", "lost_s"), [(60.0, 60.0), (120.0, 120.0), (900.0, 180.0)])
def test_with_a_notice_a_preempted_job_loses_only_the_work_after_it(notice_s, lost_s):
    ncf = fixture_profiles()["ncf"]
    step_s = ncf.step_time_s((1,), 256)[0]
    solo = JobSpec(name="solo", submit_time_s=0, application="ncf", num_replicas=1,
                   batch_size=256)
    trace = SpotTrace(path="t", gap_s=60.0, counts=(1,) * 8 + (0,) * 10_000)
    sim = spot_sim([solo], "fifo", trace, spot_nodes=1, checkpoint_interval_s=300.0,
                   notice_s=notice_s)
    job = sim.run().jobs[0]
    # As above, preempted at t=480 after a checkpoint at t=300; told notice_s before: it
    # stopped then, keeping its progress of then (a notice from before the checkpoint
    # gains nothing), and redoes only what it did after.
    assert job.preemptions == 1
    assert job.lost_gpu_hours == pytest.approx(lost_s / 3600)
    assert job.jct_s == pytest.approx(30.0 + ncf.target_progress * step_s + lost_s + 30.0)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_spot_nodes_never_exceed_the_trace_count(seed):
    raw = json.loads(FLAKY.read_text())
    gap, counts = raw["metadata"]["gap_seconds"], raw["data"]
    sim = spot_sim(load_workload(FIXTURE_WORKLOAD), "cost-aware", load_spot_trace(FLAKY),
                   spot_nodes=2, seed=seed)
    result = sim.run()
    assert sim.spot_timeline
    for time_s, held, _ in sim.spot_timeline:
        granted = counts[int(time_s // gap) % len(counts)]
        assert held == min(granted, 2)
    assert result.spot.num_nodes_preempted > 0 and result.spot.num_preemptions > 0
    assert sum(j.preemptions for j in result.jobs) == result.spot.num_preemptions


def test_the_same_seed_replays_the_same_run():
    trace = load_spot_trace(FLAKY)
    runs = [summarise(spot_sim(load_workload(FIXTURE_WORKLOAD), "cost-aware", trace).run(),
                      policy="p", workload="w") for _ in range(2)]
    assert runs[0] == runs[1]


def test_dollars_are_node_hours_of_each_pool_at_the_catalogs_two_prices():
    sim = spot_sim(load_workload(FIXTURE_WORKLOAD), "fifo", load_spot_trace(FLAKY))
    result = sim.run()
    summary = summarise(result, policy="fifo", workload="w")
    # Independently: on-demand nodes exist from 0 to the last completion; spot nodes
    # for each round as many as the pool held (the last round ends at the last completion).
    end_s = max(j.finish_s for j in result.jobs)
    starts = [t for t, _, _ in sim.spot_timeline] + [end_s]
    spot_node_s = sum(held * (min(starts[i + 1], end_s) - t)
                      for i, (t, held, _) in enumerate(sim.spot_timeline))
    assert summary["on_demand_node_hours"] == pytest.approx(1 * end_s / 3600)
    assert summary["spot_node_hours"] == pytest.approx(spot_node_s / 3600)
    assert summary["cost_usd"] == pytest.approx(
        summary["spot_node_hours"] * INSTANCE.spot_usd_per_hour
        + summary["on_demand_node_hours"] * INSTANCE.on_demand_usd_per_hour)
    assert INSTANCE.spot_usd_per_hour < INSTANCE.on_demand_usd_per_hour
    assert set(SPOT_SUMMARY_KEYS) <= set(summary)
    assert set(SPOT_JOB_COLUMNS) <= set(jobs_frame(result).columns)


def _choice_snapshot(*, preemptions: int, node_hours: float, restart_s: float,
                     checkpoint_interval_s: float, od_model: str = "T4",
                     checkpoint_cost_s: float | None = None) -> ClusterSnapshot:
    ncf = fixture_profiles()["ncf"]
    job = JobView(name="j", arrival_time_s=0.0, attained_service_gpu_s=0.0, min_gpus=1,
                  max_gpus=4, requested_gpus=1, requested_batch_size=256,
                  throughput=ProfileThroughput(ncf),
                  efficiency=EfficiencyModel(init_batch_size=ncf.init_batch_size,
                                             max_batch_size=ncf.max_batch_size,
                                             grad_sqr=1.0, grad_var=1.0),
                  restart_s=restart_s, checkpoint_interval_s=checkpoint_interval_s,
                  checkpoint_cost_s=checkpoint_cost_s)
    nodes = tuple(NodeView(node_id=node_id, gpu_model=model, num_gpus=4,
                           usd_per_hour=INSTANCE.node_usd_per_hour(spot), spot=spot)
                  for node_id, spot, model in (("spot-0", True, "T4"), ("od-0", False, od_model)))
    return ClusterSnapshot(time_s=3600.0, round_index=60, jobs=(job,), nodes=nodes,
                           spot_preemptions=preemptions, spot_node_hours=node_hours)


@pytest.mark.parametrize("od_model", ["T4", "A10G"])  # A10G: nodes of two GPU models
@pytest.mark.parametrize(("preemptions", "node_hours", "market"), [
    (200, 10.0, "od-0"),    # ~10 preemptions per node-hour: redoing work costs > 2.5x
    (0, 1000.0, "spot-0"),  # ~0.001 per node-hour: spot at 40 % of the price wins
])
def test_a_costly_restart_goes_on_demand_when_preemptions_are_frequent(
        preemptions, node_hours, market, od_model):
    snapshot = _choice_snapshot(preemptions=preemptions, node_hours=node_hours,
                                restart_s=600.0, checkpoint_interval_s=7200.0,
                                od_model=od_model)
    decision = CostAwarePolicy().decide(snapshot)
    assert set(decision.placements["j"]) == {market}


@pytest.mark.parametrize(("checkpoint_cost_s", "market"), [(None, "od-0"), (10.0, "spot-0")])
def test_a_job_checkpointing_at_youngs_interval_stays_on_spot_where_a_fixed_one_would_not(
        checkpoint_cost_s, market):
    # lambda = (0.1 x 10 + 39) / (10 + 10) = 2 per node-hour, restart 30 s, spot at 0.4 of
    # the on-demand price. Every 2 h: it redoes f = 2 x (3600 + 30) / 3600 = 2.02 per unit
    # of work, 0.4 x 3.02 > 1: on-demand. At Young's interval for a 10 s checkpoint,
    # C = sqrt(2 x 10 x 1800) = 190 s: f = 2 x (95 + 30) / 3600 + 10 / 190 = 0.12: spot.
    snapshot = _choice_snapshot(preemptions=39, node_hours=10.0, restart_s=30.0,
                                checkpoint_interval_s=7200.0,
                                checkpoint_cost_s=checkpoint_cost_s)
    assert set(CostAwarePolicy().decide(snapshot).placements["j"]) == {market}


def test_a_cheap_restart_stays_on_spot_at_the_same_frequent_preemptions():
    snapshot = _choice_snapshot(preemptions=10, node_hours=10.0, restart_s=10.0,
                                checkpoint_interval_s=60.0)
    assert set(CostAwarePolicy().decide(snapshot).placements["j"]) == {"spot-0"}


@pytest.mark.parametrize(("name", "words"), [
    ("missing.json", "no such file"),
    ("bad-json.json", "not JSON"),
    ("no-gap.json", "metadata.gap_seconds"),
])
def test_a_bad_trace_is_one_line_and_exit_2(tmp_path, capsys, name, words):
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--nodes", "1", "--spot-trace", str(SPOT_FIXTURES / name),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [["--spot"], ["--autoscale", "1:2", "--autoscale-half-life",
                                              "300"], ["--spot-nodes", "0"],
                                   ["--spot-notice", "-5"], ["--checkpoint-cost", "-1"]])
def test_conflicting_spot_options_are_one_line(tmp_path, capsys, extra):
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--spot-trace", str(FLAKY), *extra, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len([line for line in err if "error" in line]) == 1, err


def test_cli_writes_the_spot_columns(tmp_path, capsys):
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--nodes", "1", "--spot-trace", str(FLAKY), "--policy", "fifo",
                 "--out", str(tmp_path)])
    assert code == 0
    run_dir = next(tmp_path.glob("*/fifo"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_preemptions"] >= 1
    header = (run_dir / "jobs.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == list(SPOT_JOB_COLUMNS)


@pytest.mark.parametrize("policy", ["fifo", "cost-aware"])
def test_spot_off_is_the_simulator_as_before(policy):
    """The fixture run matches what the simulator wrote before spot pools existed (with
    that simulator's exploration by doubling and first measurement at a round's end;
    cost-aware's recorded again since with the learner's new prior, first size and first
    batch, see ``tests/fixtures/spot/README.md``)."""
    golden = json.loads((SPOT_FIXTURES / "spot_off_golden.json").read_text())[policy]
    result = simulate(load_workload(FIXTURE_WORKLOAD), policy, num_nodes=2,
                      first_measure_s=1e9, explore_factor=2)
    assert summarise(result, policy=policy, workload="w9") == golden["summary"]
    assert jobs_frame(result).to_dict(orient="list") == golden["jobs"]
    assert [list(row) for row in result.timeline] == golden["timeline"]


@pytest.mark.skipif(not SHARED_SPOT.is_dir(), reason=f"needs the spot traces at {SHARED_SPOT}")
def test_the_shared_traces_load():
    paths = sorted(SHARED_SPOT.glob("*/*.json"))
    assert paths
    for path in paths:
        trace = load_spot_trace(path)
        assert trace.gap_s == 300 and len(trace.counts) > 1000
        assert max(trace.counts) <= (16 if "availability" in path.parent.name else 4)


def test_a_job_is_marked_on_demand_only_while_the_on_demand_pool_holds_it():
    """Marked on-demand at a size the on-demand pool cannot hold, a job would be squeezed
    smaller there, judged cheap on spot again and flip back every round."""
    nodes = tuple(NodeView(node_id=f"{'spot' if spot else 'od'}-{i}", gpu_model="T4",
                           num_gpus=4, usd_per_hour=INSTANCE.node_usd_per_hour(spot), spot=spot)
                  for spot, count in ((True, 16), (False, 16)) for i in range(count))
    base = _choice_snapshot(preemptions=0, node_hours=0.0, restart_s=30.0,
                            checkpoint_interval_s=1800.0)
    job = dataclasses.replace(base.jobs[0], max_gpus=64)
    rate = {"spot_preemptions": 45, "spot_node_hours": 100.0}  # ~0.42 per node-hour

    def marked(placement, *, on_demand_gpus=32):
        pool = nodes[:16 + on_demand_gpus // 4]
        snapshot = dataclasses.replace(base, nodes=pool, jobs=(job,),
                                       placements={"j": placement}, **rate)
        return choose_markets(snapshot, prior_per_node_hour=0.1,
                              prior_node_hours=10.0).jobs[0].on_demand

    on_16_spot = {f"spot-{i}": 4 for i in range(16)}  # f ~ 1.7: spot costs 1.09x on-demand
    assert not marked(on_16_spot)                       # 64 GPUs > 32 on-demand GPUs
    assert marked(on_16_spot, on_demand_gpus=64)        # the pool holds it
    assert marked({f"od-{i}": 4 for i in range(16)}, on_demand_gpus=64)  # and it stays
    assert not marked({f"spot-{i}": 4 for i in range(4)})  # 4 nodes: f ~ 0.4, spot wins
