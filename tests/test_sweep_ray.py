"""Sweeps on a real local Ray: Tune trials that are real TorchTrainer runs.

One Ray session for the module. Each sweep is tiny (MNIST-1D, 3,000 samples,
seconds per trial); the target is set out of reach so that trials end by early
stopping or by their budget, which is what these tests look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

from ray import tune  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402

from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.cost.report import intervals_frame, runs_frame  # noqa: E402
from costsched.ray_layer.tune.cfo_search import CostFrugalSearcher  # noqa: E402
from costsched.ray_layer.tune.driver import run_sweep  # noqa: E402
from costsched.sweep.cfo import CostFrugalSearch, cheapest_start, point_key  # noqa: E402
from costsched.sweep.config import load_sweep  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.support.faults import kill_train_worker  # noqa: E402
from tests.test_sweep_cfo import SPACE, dollars_to_target  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(resources={"cpu_slot": 2}, num_cpus=2, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def write_sweep(tmp: Path, **changes) -> Path:
    base = yaml.safe_load((REPO / "configs" / "sweep_base.yaml").read_text())
    base["dataset"]["num_samples"] = 3000
    base["training"]["num_epochs"] = 8
    base["optimizer"]["lr"] = 0.005
    base["checkpoint"]["interval_steps"] = 10
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "name": "tiny", "base_job": "base.yaml", "target_value": 0.99,
        "budget_usd": 0.01, "trial_budget_usd": 0.004, "num_trials": 2,
        "max_concurrent_trials": 1, "search": {"algorithm": "random", "seed": 3},
        "scheduler": {"kind": "asha", "grace_usd": 0.0002, "reduction_factor": 2},
        # The baseline (the base job's lr, 0.005) first, then (seed 3's draw) a learning
        # rate too small to learn: ASHA's first rung compares the two, stops the second.
        "space": {"optimizer.lr": {"choice": [0.005, 0.000001]}},
        "storage_path": str(tmp / "sweeps"), "profile": False,
    }
    sweep.update(changes)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def outputs(tmp: Path, name: str = "tiny") -> Path:
    return tmp / "sweeps" / name / "outputs"


def ledger_of(tmp: Path, name: str = "tiny") -> Ledger:
    return Ledger(tmp / "sweeps" / name / "ledger.db", load_catalog())


@pytest.mark.extended  # a real Tune sweep and its outputs: also the budget test
def test_profiled_sweep_lifts_its_cap_stops_a_bad_trial_early_and_writes_outputs(
        local_ray, tmp_path, capsys):
    # A trial cap below what start-up alone costs: without the profile no trial could
    # reach ASHA's first rung. Raised from the measured start-up, both trials reach it,
    # and ASHA stops the one whose learning rate is too small to learn.
    path = write_sweep(tmp_path, profile=True, trial_budget_usd=0.0001)
    summary = run_sweep(load_sweep(path), load_catalog(), resume=False, address=None,
                        out_dir=None)
    assert "raised from $0.0001" in capsys.readouterr().out
    results = pd.read_csv(outputs(tmp_path) / "results.csv")
    assert len(results) == 2
    assert results["is_baseline"].sum() == 1
    assert (results["epochs"] >= 1).all(), "a trial ended before its first epoch"
    stopped = results[results["stop_reason"] == "STOPPED_EARLY"]
    assert not stopped.empty, f"ASHA stopped nothing: {results[['config', 'stop_reason']]}"
    assert (stopped["best_val_accuracy"] < results["best_val_accuracy"].max()).all()
    assert (outputs(tmp_path) / "results.parquet").stat().st_size > 0
    assert (outputs(tmp_path) / "pareto.png").stat().st_size > 0
    assert "spent $" in summary
    runs = runs_frame(ledger_of(tmp_path))
    profiles = runs[runs["run_id"].str.contains("-profile-")]
    trials = runs[~runs["run_id"].str.contains("-profile-")]
    assert len(profiles) == 1  # measured once, charged to the sweep
    assert len(trials) == 2 and (runs["outcome"] != "RUNNING").all()
    assert results["cost_usd"].sum() == pytest.approx(trials["cost_usd"].sum())
    spent = intervals_frame(ledger_of(tmp_path))["cost_usd"].sum()
    assert spent <= 0.01  # the profile's dollars count against the budget too
    plan = [f for f in ledger_of(tmp_path).forecasts() if f["source"] == "profile"][-1]["detail"]
    assert plan["start_up_s"] > 0
    best = (outputs(tmp_path) / "best_job.yaml").read_text()
    assert best.startswith("# NOT REACHED") and "labelled NOT REACHED" in summary


def test_budget_binds_and_is_never_crossed(local_ray, tmp_path):
    # Each trial may spend 0.0005, the sweep 0.0011: at most two trials can ever run.
    path = write_sweep(tmp_path, budget_usd=0.0011, trial_budget_usd=0.0005, num_trials=5,
                       scheduler={"kind": "none"})
    run_sweep(load_sweep(path), load_catalog(), resume=False, address=None, out_dir=None)
    spent = intervals_frame(ledger_of(tmp_path))["cost_usd"].sum()
    results = pd.read_csv(outputs(tmp_path) / "results.csv")
    assert spent <= 0.0011
    # Each trial within its own cap, recomputed from its intervals and the price row.
    row = load_catalog().instance("local-cpu")
    usd_per_slot_s = row.on_demand_usd_per_hour / row.num_gpus_per_node / 3600
    for run_id, group in intervals_frame(ledger_of(tmp_path)).groupby("run_id"):
        held = ((group["ended_at"] - group["started_at"]) * group["num_workers"]).sum()
        assert held * usd_per_slot_s <= 0.0005 * (1 + 1e-9), f"{run_id} crossed its cap"
    assert len(results) < 5, "the budget should have stopped the sweep launching trials"
    assert (results["stop_reason"] == "BUDGET_EXHAUSTED").any()


def synthetic_trial(config: dict) -> None:
    """A Tune trial whose dollars to the target are a known function of its point."""
    started = time.time()
    # Long enough that two trials Tune starts together overlap even when their workers
    # start seconds apart on a loaded machine (1 s missed in two clean-clone runs).
    time.sleep(3.0)
    tune.report({"objective": dollars_to_target(config), "started": started,
                     "ended": time.time()})


def test_cfo_drives_real_tune_trials_two_at_a_time_to_better_points(local_ray, tmp_path):
    start = cheapest_start(SPACE, {"optimizer.lr": 1e-2, "training.global_batch_size": 256,
                                   "training.precision": "fp32"}, {})
    searcher = ConcurrencyLimiter(
        CostFrugalSearcher(CostFrugalSearch(SPACE, start=start, seed=0), metric="objective"),
        max_concurrent=2)
    grid = tune.Tuner(
        tune.with_resources(synthetic_trial, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=12),
        run_config=tune.RunConfig(name="cfo", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert not grid.errors
    frame = grid.get_dataframe()
    assert len(frame) == 12
    points = [{k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}
              for row in frame.to_dict("records")]
    assert len({point_key(p) for p in points}) == 12  # no point run twice
    spans = sorted(zip(frame["started"], frame["ended"], strict=True))
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # side by side
    first = frame.loc[frame["started"].idxmin(), "objective"]
    assert first == pytest.approx(dollars_to_target(start))  # it began at the start point
    assert frame["objective"].min() < 0.5 * first


@pytest.mark.extended  # charged once across a worker kill: also the scheduler tests
def test_killed_trial_worker_resumes_and_is_charged_once(local_ray, tmp_path):
    path = write_sweep(tmp_path, num_trials=1, scheduler={"kind": "none"},
                       space={"optimizer.lr": {"choice": [0.005]}})
    killed = {}

    def kill_once_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "pid" not in killed:
            runs = tmp_path / "sweeps" / "tiny" / "trials"
            if list(runs.glob("*/checkpoint_*/state.pt")):
                time.sleep(0.5)
                killed["pid"] = kill_train_worker()
            time.sleep(0.2)

    threading.Thread(target=kill_once_training, daemon=True).start()
    run_sweep(load_sweep(path), load_catalog(), resume=False, address=None, out_dir=None)
    assert "pid" in killed
    intervals = intervals_frame(ledger_of(tmp_path))
    assert list(intervals["outcome"])[:1] == ["FAILED"] and len(intervals) >= 2
    assert (intervals["started_at"].iloc[1:].values
            >= intervals["ended_at"].iloc[:-1].values - 1e-6).all(), "intervals overlap"
    results = pd.read_csv(outputs(tmp_path) / "results.csv")
    assert results["cost_usd"].iloc[0] == pytest.approx(intervals["cost_usd"].sum())


@pytest.mark.extended  # a sweep resumed: also the budget gate's pure tests
def test_resume_after_the_driver_is_killed(local_ray, tmp_path):
    path = write_sweep(tmp_path, num_trials=2, scheduler={"kind": "none"},
                       space={"optimizer.lr": {"choice": [0.005, 0.004]}})
    cmd = [sys.executable, "-m", "costsched.cli.main", "sweep", str(path), "--address", local_ray]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    ledger_file = tmp_path / "sweeps" / "tiny" / "ledger.db"
    deadline = time.monotonic() + 240
    finished: list[dict] = []
    while time.monotonic() < deadline and not finished:
        if ledger_file.exists():
            finished = [r for r in Ledger(ledger_file, load_catalog()).runs()
                        if r["outcome"] not in ("RUNNING",)]
        time.sleep(0.5)
    assert finished, "no trial finished before the deadline"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = {r["run_id"]: r for r in ledger_of(tmp_path).runs()}

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = {r["run_id"]: r for r in ledger_of(tmp_path).runs()}
    done_first = finished[0]["run_id"]
    assert after[done_first]["ended_at"] == before[done_first]["ended_at"], "finished trial rerun"
    assert len(after) == 2
    assert all(r["outcome"] != "RUNNING" for r in after.values())
    results = pd.read_csv(outputs(tmp_path) / "results.csv")
    assert len(results) == 2
    assert results["cost_usd"].sum() == pytest.approx(
        intervals_frame(ledger_of(tmp_path))["cost_usd"].sum())
