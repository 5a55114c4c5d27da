"""Several GPU types: one model per job, the fast type to the job it speeds up most, per-type
batch caps and prices, the heterogeneity-unaware baseline, and ``simulate --cluster`` input errors.

Profiles: ``tests/fixtures/sia_small`` (synthetic, see its README): bert on three types,
`dgx-ext` 100x faster per sample than `aws`, `rtx` 20x slower.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from costsched.config.bundled import default_catalog_path
from costsched.cost.prices import load_catalog
from costsched.goodput.throughput import ThroughputPoint
from costsched.policy import hetero
from costsched.policy.cost_aware import CostAwarePolicy, UnawareCostAwarePolicy
from costsched.policy.snapshot import NodeView, TypeOption
from costsched.policy.validate import InvalidDecision
from costsched.sim.gpu_types import (
    DEFAULT_SIA_DIR,
    NodePool,
    load_typed_app,
    load_typed_profiles,
)
from costsched.sim.hetero import HeteroSimulator
from costsched.sim.simulator import SimConfig
from costsched.sim.workload import load_workload
from tests.support.policy_fakes import FakeThroughput, job, perfect_scaling, snapshot
from tests.support.sim_fixture import Recorder

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "sia_small"
WORKLOAD = FIXTURE / "workloads" / "philly" / "workload-1.csv"
CLUSTER = (("aws", "g4dn.12xlarge", 1), ("rtx", "onprem-rtx2080ti-8x", 1),
           ("dgx-ext", "p4d.24xlarge", 1))
REPO = Path(__file__).resolve().parents[1]


def pools(cluster=CLUSTER):
    catalog = load_catalog()
    return tuple(NodePool(gpu_type=t, instance_name=name, instance=catalog.instance(name),
                          num_nodes=n) for t, name, n in cluster)


def simulate(policy, *, cluster=CLUSTER, oracle=False, restart_s_by_app=None):
    node_pools = pools(cluster)
    profiles = load_typed_profiles(FIXTURE, tuple(p.gpu_type for p in node_pools),
                                   calibrate=False)
    config = SimConfig(instance=node_pools[0].instance, num_nodes=len(cluster), elastic=True,
                       oracle=oracle)
    sim = HeteroSimulator(config=config, pools=node_pools, profiles=profiles,
                          workload=load_workload(WORKLOAD), policy=policy,
                          aware=policy.heterogeneity_aware, restart_s_by_app=restart_s_by_app)
    return sim, sim.run()


@pytest.fixture(scope="module", params=[CostAwarePolicy, UnawareCostAwarePolicy],
                ids=["aware", "unaware"])
def recorded(request):
    recorder = Recorder(request.param())
    sim, result = simulate(recorder)
    return recorder, sim, result


def test_no_job_ever_mixes_gpu_models(recorded):
    recorder, _, result = recorded
    model_of = {n.node_id: n.gpu_model for n in recorder.rounds[0][0].nodes}
    placed = 0
    for _, decision in recorder.rounds:
        for placement in decision.placements.values():
            placed += 1
            assert len({model_of[node_id] for node_id in placement}) == 1, placement
    assert placed and all(j.finish_s > j.submit_s for j in result.jobs)


def test_a_decision_that_mixes_models_is_refused():
    class Mixer:
        name, heterogeneity_aware = "cost-aware", True

        def decide(self, snap):
            first, second = snap.nodes[0], snap.nodes[1]
            return dataclasses.replace(
                CostAwarePolicy().decide(snap),
                placements={snap.jobs[0].name: {first.node_id: 1, second.node_id: 1}},
                batch_sizes={snap.jobs[0].name: 24})

    with pytest.raises(InvalidDecision, match="mixes GPU models"):
        simulate(Mixer())


def test_the_aware_policy_runs_on_the_fastest_type_per_dollar():
    # dgx-ext: 100x aws's speed at 2.8x its price per GPU; rtx: 1/20 at 0.28x.
    sim, result = simulate(CostAwarePolicy())
    hours = sim.gpu_hours_by_type()
    assert hours["p4d.24xlarge"] > 0.9 * sum(hours.values()), hours


def test_with_the_oracle_too_the_aware_policy_picks_the_fast_type():
    sim, _ = simulate(CostAwarePolicy(), oracle=True)
    hours = sim.gpu_hours_by_type()
    assert hours["p4d.24xlarge"] > 0.9 * sum(hours.values()), hours
    sim, _ = simulate(UnawareCostAwarePolicy(), oracle=True)
    hours = sim.gpu_hours_by_type()
    assert hours["p4d.24xlarge"] < 0.9 * sum(hours.values()), hours


def test_the_unaware_policy_does_not_prefer_the_fast_type():
    sim, result = simulate(UnawareCostAwarePolicy())
    hours = sim.gpu_hours_by_type()
    assert hours["p4d.24xlarge"] < 0.9 * sum(hours.values()), hours


def two_models(gpus: int = 4, dear_usd_per_gpu_hour: float = 16.0):
    cheap = NodeView(node_id="c0", gpu_model="CHEAP", num_gpus=gpus, usd_per_hour=4.0 * gpus)
    dear = NodeView(node_id="d0", gpu_model="DEAR", num_gpus=gpus,
                    usd_per_hour=dear_usd_per_gpu_hour * gpus)
    return cheap, dear


def on_model(speedup_on_dear: float, name: str, arrival_time_s: float):
    base = FakeThroughput(perfect_scaling)
    fast = FakeThroughput(lambda p, lb: perfect_scaling(p, lb) / speedup_on_dear)
    return dataclasses.replace(job(name, max_gpus=1, arrival_time_s=arrival_time_s),
                               by_gpu_model={"CHEAP": TypeOption(throughput=base, max_gpus=1),
                                             "DEAR": TypeOption(throughput=fast, max_gpus=1)})


@pytest.mark.parametrize("dear_usd_per_gpu_hour", [16.0, 40.0])
@pytest.mark.parametrize("ten_first", [True, False])
def test_the_fast_model_goes_to_the_job_it_speeds_up_most(ten_first, dear_usd_per_gpu_hour):
    """One GPU of each model, DEAR 4x or 10x CHEAP's catalog price. The job 10x faster on
    DEAR gets DEAR, the job only 2x faster gets CHEAP, whoever came first: at 10x, per
    catalog dollar both jobs are better off on CHEAP, and the first would take it."""
    ten, two = on_model(10.0, "ten", 0.0 if ten_first else 1.0), on_model(2.0, "two", 0.5)
    cluster = two_models(gpus=1, dear_usd_per_gpu_hour=dear_usd_per_gpu_hour)
    decision = CostAwarePolicy().decide(snapshot([ten, two], cluster))
    model_of = {n.node_id: n.gpu_model for n in cluster}
    got = {name: {model_of[n] for n in p} for name, p in decision.placements.items()}
    assert got == {"ten": {"DEAR"}, "two": {"CHEAP"}}


def test_the_policy_prices_each_model_by_its_worth_to_the_jobs_and_shares_out_the_bill():
    """v(m): the jobs' mean one-GPU goodput on m over their best; v(CHEAP) = (1/10 + 1/2)
    / 2 = 0.3, v(DEAR) = 1, v(OTHER) = 0 (no job runs there). The bill, $4 + $40 + $10 an
    hour, is shared out over the GPUs in proportion: 1.3 units."""
    ten, two = on_model(10.0, "ten", 0.0), on_model(2.0, "two", 0.5)
    other = NodeView(node_id="o0", gpu_model="OTHER", num_gpus=1, usd_per_hour=10.0)
    snap = snapshot([ten, two], (*two_models(gpus=1, dear_usd_per_gpu_hour=40.0), other))
    prices = hetero._TypedGrowth(CostAwarePolicy(), snap).gpu_price
    assert prices == pytest.approx({"CHEAP": 54.0 * 0.3 / 1.3, "DEAR": 54.0 / 1.3,
                                    "OTHER": 0.0})
    blind = hetero._TypedGrowth(UnawareCostAwarePolicy(), snap).gpu_price
    assert blind == pytest.approx(dict.fromkeys(("CHEAP", "DEAR", "OTHER"), 54.0 / 3))


def test_a_lone_job_much_faster_elsewhere_goes_there():
    lone = on_model(10.0, "lone", 0.0)
    decision = CostAwarePolicy().decide(snapshot([lone], two_models()))
    assert set(decision.placements["lone"]) == {"d0"}


def test_unaware_decisions_do_not_depend_on_per_type_models():
    base = FakeThroughput(perfect_scaling)
    fast = FakeThroughput(lambda p, lb: perfect_scaling(p, lb) / 10)
    views = [dataclasses.replace(job(f"j{i}", max_gpus=4, arrival_time_s=i), by_gpu_model={
        "CHEAP": TypeOption(throughput=a, max_gpus=4), "DEAR": TypeOption(throughput=b,
                                                                          max_gpus=4)})
        for i, (a, b) in enumerate([(base, fast), (fast, base)])]
    swapped = [dataclasses.replace(v, by_gpu_model={
        "CHEAP": v.by_gpu_model["DEAR"], "DEAR": v.by_gpu_model["CHEAP"]}) for v in views]
    policy = UnawareCostAwarePolicy()
    first = policy.decide(snapshot(views, two_models()))
    second = policy.decide(snapshot(swapped, two_models()))
    assert first.placements == second.placements and first.placements


def test_the_unaware_simulation_shows_the_policy_one_type(recorded):
    recorder, _, _ = recorded
    views = [v for snap, _ in recorder.rounds for v in snap.jobs]
    if recorder.heterogeneity_aware:
        assert all(set(v.by_gpu_model) == {"T4", "RTX2080Ti", "A100-40GB"} for v in views)
    else:
        assert views and not any(v.by_gpu_model for v in views)


def test_each_type_has_its_own_batch_cap():
    aws = load_typed_app(FIXTURE / "cap" / "deepspeech2", "aws")
    rtx = load_typed_app(FIXTURE / "cap" / "deepspeech2", "rtx")
    assert (aws.max_local_bsz, rtx.max_local_bsz) == (80, 57)  # rtx: Sia's cap
    assert max(rtx.local_bsz_choices) == 57
    bert = load_typed_profiles(FIXTURE, ("aws", "dgx-ext"), calibrate=False)["aws"]["bert"]
    assert bert.max_local_bsz == 12


def test_no_step_runs_a_micro_batch_above_its_types_cap(recorded):
    _, sim, _ = recorded
    caps = {m: sim.typed[p.gpu_type]["bert"].max_local_bsz for m, p in sim.pools.items()}
    assert caps == {"T4": 12, "RTX2080Ti": 12, "A100-40GB": 48}
    points = [(m, pt) for (_, m), learner in sim._learners.items() for pt in learner.points]
    assert not sim.aware or points
    assert all(pt.local_bsz <= caps[m] for m, pt in points)


def catalog_row(instance_type: str) -> dict:
    return yaml.safe_load(default_catalog_path().read_text())["instance_types"][instance_type]


def test_every_simulated_dollar_traces_to_a_catalog_row(recorded):
    _, _, result = recorded
    for record in result.jobs:
        usd = gpu_h = 0.0
        for start_s, end_s, instance_type, num_gpus in record.intervals:
            row = catalog_row(instance_type)
            hours = (end_s - start_s) / 3600 * num_gpus
            gpu_h += hours
            usd += hours * row["on_demand_usd_per_hour"] / row["num_gpus_per_node"]
        assert record.intervals and usd == pytest.approx(record.cost_usd, rel=1e-9)
        assert gpu_h == pytest.approx(record.gpu_hours, rel=1e-9)
    makespan_s = max(j.finish_s for j in result.jobs)
    cluster_usd = sum(catalog_row(t)["on_demand_usd_per_hour"] * n for _, t, n in CLUSTER)
    assert result.cost_usd == pytest.approx(cluster_usd * makespan_s / 3600, rel=1e-9)


def test_a_type_change_is_a_restart_of_the_apps_restart_time():
    _, result = simulate(CostAwarePolicy(), restart_s_by_app={"bert": 600.0})
    _, quick = simulate(CostAwarePolicy(), restart_s_by_app={"bert": 0.0})
    mean = sum(j.jct_s for j in result.jobs) / len(result.jobs)
    assert mean > sum(j.jct_s for j in quick.jobs) / len(quick.jobs) + 300


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "costsched.cli.main", "simulate", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize(("args", "words"), [
    (["--cluster", "sia", "--policy", "las"], "needs elastic policies"),
    (["--cluster", "sia", "--autoscale", "1:2"], "fixed cluster"),
    (["--cluster", "sia", "--nodes", "4"], "fixed cluster"),
    (["--cluster", "sia", "--profiles", "/nonexistent/sia"], "no Sia profiles"),
    (["--cluster", "sai"], "unknown cluster `sai`"),
])
def test_bad_cluster_input_is_one_line(tmp_path, args, words):
    proc = run_cli("--workload", str(WORKLOAD), "--out", str(tmp_path / "out"), *args)
    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1 and words in proc.stderr, proc.stderr


@pytest.mark.skipif(not (DEFAULT_SIA_DIR / "profiles").is_dir(),
                    reason=f"needs the Sia data at {DEFAULT_SIA_DIR} (../shared/data absent)")
def test_the_sia_data_loads_with_its_caps_and_calibration():
    typed = load_typed_profiles(DEFAULT_SIA_DIR, ("aws", "rtx", "dgx-ext"))
    assert typed["rtx"]["deepspeech2"].max_local_bsz == 57
    assert typed["dgx-ext"]["cifar10"].max_local_bsz == 4096
    raw = load_typed_profiles(DEFAULT_SIA_DIR, ("aws",), calibrate=False)["aws"]["cifar10"]
    calibrated = typed["aws"]["cifar10"]
    assert calibrated.step_time_s((1,), 32)[0] == pytest.approx(
        1.8 * raw.step_time_s((1,), 32)[0])


def test_each_type_offers_sizes_within_reach_of_what_its_own_fit_has_measured():
    """Pollux's exploration rule per learner: once a job has stepped on 8 A100s, it is
    offered up to 8 x 8 there (its useful most, 24) but at most 8 x 1 T4s, where only the
    arrival's one-GPU profile was measured: the T4 fit has seen nothing past one GPU."""
    cluster = (("aws", "g4dn.12xlarge", 8), ("dgx-ext", "p4d.24xlarge", 8))
    node_pools = pools(cluster)
    profiles = load_typed_profiles(FIXTURE, ("aws", "dgx-ext"), calibrate=False)
    config = SimConfig(instance=node_pools[0].instance, num_nodes=16, elastic=True)
    sim = HeteroSimulator(config=config, pools=node_pools, profiles=profiles,
                          workload=load_workload(WORKLOAD), policy=CostAwarePolicy())
    job = sim.jobs[0]
    sim._profile_on_arrival(job)
    offered = {m: o.max_gpus for m, o in sim._view(job, 0.0).by_gpu_model.items()}
    assert offered == {"T4": 8, "A100-40GB": 8}
    app = sim._app(job, "A100-40GB")
    local = int(app.local_bsz_choices[0])
    _, step_s, sync_s = app.accumulated_step((8,), local)
    sim._learners[(job.spec.name, "A100-40GB")].record(ThroughputPoint(
        num_nodes=1, num_replicas=8, local_bsz=local, step_time_s=step_s, sync_time_s=sync_s,
        placement=(8,)))
    view = sim._view(job, 0.0)
    assert {m: o.max_gpus for m, o in view.by_gpu_model.items()} == {"T4": 8, "A100-40GB": 24}
    assert view.max_gpus == 24
