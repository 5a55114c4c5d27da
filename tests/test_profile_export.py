"""Live back to simulation: what the scheduler recorded of a job exports as a simulator
profile that loads like the Pollux ones and replays the job under other policies."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from costsched.config.bundled import bundled_config
from costsched.errors import ConfigError
from costsched.goodput.profile import export_profile
from costsched.scheduler.job_models import JobModels, measurement_from_report
from costsched.scheduler.state import JobStore
from costsched.sim.profiles import load_app, load_profiles
from costsched.sim.workload import JobSpec
from tests.conftest import REPO, quickstart_dict
from tests.support.sim_fixture import simulate

BATCH, STEPS_PER_EPOCH, NUM_EPOCHS = 64, 100, 8
# The job ran 2 epochs on one worker, 2 on two (one node), 2 on four (two nodes):
# (workers, nodes, micro-batch, step s, sync s, |G|^2 or None).
STRETCHES = [(1, 1, 64, 0.30, 0.00, None), (2, 1, 32, 0.17, 0.02, 1.2),
             (4, 2, 16, 0.12, 0.05, 0.7)]
TR_SIGMA = 96.0  # per-example gradient variance the meter reports: noise scale 96 / |G|^2


def report(stretch: int, epoch: int, step: int, *, end_of_epoch: bool) -> dict:
    """A progress record as the runner reads it (val_accuracy only at an epoch's end)."""
    workers, nodes, local, step_s, sync_s, sqr = STRETCHES[stretch]
    out = {"world_size": workers, "num_nodes": nodes, "local_bsz": local, "accum_steps": 1,
           "step_time_s": step_s, "sync_time_s": sync_s, "samples_per_s": BATCH / step_s,
           "grad_sqr": sqr, "grad_var": None if sqr is None else TR_SIGMA,
           "epoch": epoch, "global_step": step}
    return out | ({"val_accuracy": 0.5 + 0.05 * epoch} if end_of_epoch else {})


def polls() -> list[dict]:
    """What the controller's polls saw: each epoch's end except the 4th (missed), and
    reports part-way into the next epoch, which must not move the epoch's row."""
    seen = []
    for epoch in (1, 2, 3, 5, 6):
        stretch = (epoch - 1) // 2
        seen.append(report(stretch, epoch, epoch * STEPS_PER_EPOCH, end_of_epoch=True))
        seen.append(report(stretch, epoch, epoch * STEPS_PER_EPOCH + 37, end_of_epoch=False))
    return seen


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """A scheduler state file holding the job, its measurements and its curve (built once:
    each new configuration refits the job's model, a second or so); tests only read it."""
    path = tmp_path_factory.mktemp("state") / "scheduler.db"
    data = quickstart_dict()
    data["name"] = "mnist"
    data["training"] |= {"global_batch_size": BATCH, "num_epochs": NUM_EPOCHS}
    job = JobStore(path).add_job(name="mnist", config_yaml=yaml.safe_dump(data),
                                 config_hash="h", priority=0, budget_usd=1.0, min_workers=1,
                                 max_workers=4, now=0.0)
    models = JobModels(path)
    for i, record in enumerate(polls()):
        models.record(job.job_id, measurement_from_report(record), now=float(i))
    return path, job.job_id


def test_the_curve_keeps_each_epochs_end_report(state):
    path, job_id = state
    curve = JobModels(path).curve(job_id)
    assert [(c.epoch, c.global_step) for c in curve] == [(1, 100), (2, 200), (3, 300),
                                                         (5, 500), (6, 600)]
    assert [c.metric for c in curve] == pytest.approx([0.55, 0.6, 0.65, 0.75, 0.8])
    assert curve[0].grad_sqr is None and curve[2].grad_var == TR_SIGMA
    assert {c.global_batch_size for c in curve} == {BATCH}  # workers x micro-batch x accum


def test_a_malformed_curve_field_does_not_lose_the_step_measurement():
    m = measurement_from_report(report(1, 3, 300, end_of_epoch=True) | {"epoch": "three"})
    assert m is not None and m.step_time_s == 0.17 and m.epoch is None
    assert m.global_step == 300 and m.metric == pytest.approx(0.65)
    assert measurement_from_report({"epoch": 3, "global_step": 300}) is None  # no step timed


def test_export_round_trips_step_times_and_curve(state, tmp_path):
    path, job_id = state
    done = export_profile(JobModels(path), job_id, tmp_path / "profiles", app_name="mnist",
                          epochs=6, init_batch_size=BATCH)
    assert sorted(f.name for f in done.files) == [
        "app.json", "placements.csv", "scalability.csv", f"validation-{BATCH}.csv"]
    app = load_profiles(tmp_path / "profiles")["mnist"]
    assert (app.max_epochs, app.init_batch_size, app.max_local_bsz) == (6, BATCH, 64)
    # Each measured configuration's step, as recorded (no accumulation: a = 1).
    for workers, nodes, local, step_s, sync_s, _ in STRETCHES:
        shape = (workers,) if nodes == 1 else (workers // nodes,) * nodes
        assert app.step_time_s(shape, local) == pytest.approx((step_s, sync_s))
    assert pd.read_csv(done.folder / "scalability.csv").num_nodes.tolist() == [2]
    curve = app.curves[BATCH]
    # One step per step at B0; the missed 4th epoch lies halfway.
    assert curve.iteration.tolist() == [100, 200, 300, 400, 500, 600]
    assert curve.progress.tolist() == pytest.approx(curve.iteration.tolist())
    assert app.target_progress == pytest.approx(600)
    assert curve.metric.isna().tolist() == [False, False, False, True, False, False]
    # Unmeasured first epochs hold the first measurement; grad_var per B0-example.
    assert curve.grad_sqr.tolist() == pytest.approx([1.2, 1.2, 1.2, 0.95, 0.7, 0.7])
    assert curve.grad_var.tolist() == pytest.approx([TR_SIGMA / BATCH] * 6)
    assert app.gain(2 * BATCH, 0) == pytest.approx((1.5 + 1.2) / (0.75 + 1.2))


def test_sizes_never_measured_hold_the_nearest_measured_step(state, tmp_path):
    path, job_id = state
    export_profile(JobModels(path), job_id, tmp_path, app_name="mnist", epochs=6)
    app = load_app(tmp_path / "mnist")
    # Three or four GPUs on one node: the two-worker step, not the one-GPU one.
    assert app.step_time_s((3,), BATCH / 3)[0] == pytest.approx(0.17)
    assert app.step_time_s((4,), BATCH / 4)[0] == pytest.approx(0.17)
    # Eight GPUs over two nodes: the four-worker, two-node step.
    assert app.step_time_s((4, 4), BATCH / 8)[0] == pytest.approx(0.12)


def test_the_simulator_replays_the_exported_job_under_two_policies(state, tmp_path):
    path, job_id = state
    export_profile(JobModels(path), job_id, tmp_path, app_name="mnist", epochs=6)
    profiles = load_profiles(tmp_path)
    workload = [JobSpec(name="one", submit_time_s=0, application="mnist", num_replicas=1,
                        batch_size=BATCH),
                JobSpec(name="two", submit_time_s=0, application="mnist", num_replicas=2,
                        batch_size=BATCH)]
    fifo = {j.name: j.jct_s for j in simulate(workload, "fifo", num_nodes=1,
                                              profiles=profiles).jobs}
    # 30 s restart, then the run's 600 steps at the step measured at that size.
    assert fifo == pytest.approx({"one": 30 + 600 * 0.30, "two": 30 + 600 * 0.17})
    # The elastic policy sizes them itself: each runs at one of the measured speeds, and
    # the one-GPU job gets a second GPU (the node has four), so it finishes sooner.
    # With the oracle view the policy sees the exported measurements themselves.
    elastic = {j.name: j.jct_s for j in simulate(workload, "cost-aware", num_nodes=1,
                                                 profiles=profiles, oracle=True).jobs}
    measured = [30 + 600 * s[3] for s in STRETCHES]
    assert all(any(jct == pytest.approx(m) for m in measured) for jct in elastic.values())
    assert elastic["one"] < fifo["one"]


def test_epochs_past_the_last_recorded_continue_at_its_mean_pace(state, tmp_path):
    path, job_id = state
    export_profile(JobModels(path), job_id, tmp_path, app_name="mnist", epochs=NUM_EPOCHS)
    curve = load_app(tmp_path / "mnist").curves[BATCH]
    assert curve.iteration.tolist() == [100 * e for e in range(1, NUM_EPOCHS + 1)]
    assert curve.grad_sqr.iloc[-1] == pytest.approx(0.7)


def test_a_job_without_measurements_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="job ghost-3 has no step measurements") as err:
        export_profile(JobModels(tmp_path / "s.db"), "ghost-3", tmp_path, app_name="g",
                       epochs=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("spec", "message"), [
    ({"epochs": 6, "max_local_bsx": 8}, "did you mean `max_local_bsz`"),
    ({"epochs": 0}, "whole numbers >= 1"),
    ({"epochs": 7}, "fewer than the 7 to train"),
    ({"epochs": 6, "max_local_bsz": 8}, "below every measured"),
])
def test_a_bad_app_json_is_one_clear_error(state, tmp_path, spec, message):
    path, job_id = state
    done = export_profile(JobModels(path), job_id, tmp_path, app_name="mnist", epochs=6)
    (done.folder / "app.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=message):
        load_app(done.folder)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "costsched.cli.main", "profile", "export",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_exports_from_the_state_file_and_names_an_unknown_job(state, tmp_path):
    path, job_id = state
    config = yaml.safe_load(bundled_config("scheduler.yaml").read_text())
    (tmp_path / "scheduler.yaml").write_text(yaml.safe_dump(config | {"state_path": str(path)}))
    out = tmp_path / "profiles"
    done = cli(job_id, "--out", str(out), "--config", str(tmp_path / "scheduler.yaml"))
    assert done.returncode == 0, done.stderr
    assert f"validation-{BATCH}.csv" in done.stdout and "5 recorded, 3 filled in" in done.stdout
    app = load_profiles(out)[job_id]  # named after the job; the config's 8 epochs
    assert app.max_epochs == NUM_EPOCHS and app.target_progress == pytest.approx(800)
    wrong = cli("mnsit-1", "--out", str(out), "--config", str(tmp_path / "scheduler.yaml"))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == [
        "costsched profile: error: unknown job id `mnsit-1`; did you mean `mnist-1`?"]
