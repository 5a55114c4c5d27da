"""The launch forecast of a scheduled run: the dry run's plan, sent with the submitted
job, rescaled at the run's first start to the workers, nodes and price the scheduler
chose, stored with the run in a real SQLite ledger and compared by ``report``."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import yaml

from costsched.cli.jobs import stored_plan
from costsched.config.job import parse_job
from costsched.cost.accounting import RunAccount, record_plan_forecast, record_submitted_plan
from costsched.cost.forecast import RunProfile, forecast_from_profile
from costsched.cost.ledger import Ledger
from costsched.cost.plans import PRIOR_CURVE_KEY, submitted_plan
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.cost.report import runs_frame
from costsched.goodput.throughput import DEFAULT_PRIOR
from costsched.ray_layer.scheduler.driver import attach_launch_forecast
from costsched.scheduler.launch import profile_params, profiled_size, rescaled_profile
from tests.conftest import REPO

CATALOG = load_catalog()
ROWS = 6400
"""Training rows: 100 steps an epoch at the global batch of 64."""
JOB_DATA = {
    "name": "fc", "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [16]},
    "training": {"num_epochs": 10, "global_batch_size": 64},
    "scaling": {"min_workers": 1, "max_workers": 2, "accelerator_resource": "cpu_slot",
                "use_gpu": False},
    "checkpoint": {"interval_steps": 30}, "cost": {"instance_type": "local-cpu"},
}
JOB = parse_job(JOB_DATA, "test job", CATALOG)
PROFILE = RunProfile(num_workers=2, start_up_s=30.0, step_s=0.02, epoch_overhead_s=0.5,
                     tail_s=2.0, profiled_s=40.0)


def as_run(job, *, workers: int, instance_type: str = "local-cpu"):
    """The job as the scheduler's runner launches it: fixed at ``workers``, billed at
    ``instance_type`` (the nodes it was placed on)."""
    return dataclasses.replace(
        job, scaling=dataclasses.replace(job.scaling, min_workers=workers, max_workers=workers),
        cost=dataclasses.replace(job.cost, instance_type=instance_type))


def dry_run(ledger: Ledger, job=JOB) -> None:
    """What ``costsched train --dry-run`` stores: the profile's forecast of the config."""
    forecast = forecast_from_profile(PROFILE, rate=rate_of_job(job, CATALOG), num_epochs=10,
                                     steps_per_epoch=100)
    record_plan_forecast(ledger, job, forecast, now=10.0, detail=dataclasses.asdict(PROFILE))


def prior_step_s(workers: int, nodes: int, batch: int = 64) -> float:
    """The prior's seconds per step of ``batch`` on ``workers`` over ``nodes``, written
    out from its definition: compute 0.1 s + 10 ms per example of the local batch, the
    all-reduce (within a node or across) for more than one replica, combined by the
    gamma-norm."""
    p = DEFAULT_PRIOR
    compute = p.alpha_c + p.beta_c * batch / workers
    extra = max(workers - 2, 0)
    sync = 0.0 if workers == 1 else (p.alpha_n + p.beta_n * extra if nodes > 1
                                     else p.alpha_r + p.beta_r * extra)
    top, low = max(compute, sync), min(compute, sync)
    return top * (1 + (low / top) ** p.gamma) ** (1 / p.gamma)


def usd_per_worker_s(instance_type: str) -> float:
    """The on-demand price of one slot of ``instance_type``, the catalog read as YAML."""
    row = yaml.safe_load((REPO / "configs" / "prices.yaml").read_text())[
        "instance_types"][instance_type]
    return row["on_demand_usd_per_hour"] / row["num_gpus_per_node"] / 3600.0


def launch(ledger: Ledger, run_job, run_id: str, *, nodes: int = 1) -> list[dict]:
    attach_launch_forecast(ledger, run_job, run_id, plan_hash=JOB.config_hash(),
                           num_nodes=nodes, batch_size=None, num_train_rows=ROWS,
                           catalog=CATALOG)
    return ledger.forecasts(run_id)


@pytest.fixture
def scheduler_ledger(tmp_path):
    """The scheduler's ledger once a job was submitted after a dry run of its config,
    which had also run before to its end (its learning curve measured)."""
    own = Ledger(tmp_path / "own.db", CATALOG)
    dry_run(own)
    account = RunAccount(own, "earlier")
    account.open(JOB, now=0.0)
    history = [{"epoch": e, "val_accuracy": 0.9 - 0.5 / e} for e in range(1, 11)]
    account.finish(outcome="COMPLETED", now=5.0, metrics={"history": history})
    plan = submitted_plan(own, JOB.config_hash())
    assert plan is not None and plan["detail"][PRIOR_CURVE_KEY] == pytest.approx(
        [h["val_accuracy"] for h in history])
    ledger = Ledger(tmp_path / "scheduler.db", CATALOG)
    record_submitted_plan(ledger, JOB, json.loads(json.dumps(plan)))  # as sent over the wire
    return ledger


def test_a_run_started_on_fewer_workers_and_dearer_nodes_is_forecast_at_them(
        scheduler_ledger):
    run_job = as_run(JOB, workers=1, instance_type="g5.xlarge")
    forecasts = launch(scheduler_ledger, run_job, "fc-1")
    assert [f["source"] for f in forecasts] == ["profile"]
    launched = forecasts[0]
    assert launched["detail"]["num_workers"] == 1 and launched["detail"]["profiled_workers"] == 2
    # One worker runs the whole global batch: slower steps, by the prior's ratio; the
    # same 100 steps an epoch (the global batch is fixed).
    step_s = PROFILE.step_s * prior_step_s(1, 1) / prior_step_s(2, 1)
    seconds = PROFILE.start_up_s + 10 * (100 * step_s + PROFILE.epoch_overhead_s) + PROFILE.tail_s
    assert launched["seconds_to_end"] == pytest.approx(seconds)
    assert launched["usd_to_end"] == pytest.approx(seconds * usd_per_worker_s("g5.xlarge"))
    # Its second start (a resume) keeps the launch forecast as it was.
    RunAccount(scheduler_ledger, "fc-1").open(run_job, now=100.0)
    assert len(launch(scheduler_ledger, run_job, "fc-1")) == 1


def test_report_sets_the_launch_forecast_beside_what_the_run_did(scheduler_ledger):
    run_job = as_run(JOB, workers=1)
    forecast = launch(scheduler_ledger, run_job, "fc-1")[0]
    account = RunAccount(scheduler_ledger, "fc-1")
    account.open(run_job, now=100.0)
    took_s = forecast["seconds_to_end"] * 1.2  # 20% longer than forecast
    feed = account.accountant(run_started_at=100.0, accelerators_per_worker=1.0,
                              resources={"cpu_slot": 1.0})
    feed.on_report({"attempt_started_at": 100.0, "world_size": 1}, now=100.0 + took_s)
    account.finish(outcome="COMPLETED", now=100.0 + took_s, metrics={})
    row = runs_frame(scheduler_ledger).set_index("run_id").loc["fc-1"]
    assert row["forecast_s"] == pytest.approx(forecast["seconds_to_end"])
    assert row["time_error_pct"] == pytest.approx(100 * 0.2 / 1.2)
    assert row["cost_error_pct"] == pytest.approx(100 * 0.2 / 1.2)


def test_at_the_profiled_size_on_one_node_the_launch_forecast_is_the_dry_runs(
        scheduler_ledger):
    plan = scheduler_ledger.forecasts(config_hash=JOB.config_hash())[-1]
    launched = launch(scheduler_ledger, as_run(JOB, workers=2), "fc-1")[0]
    assert launched["seconds_to_end"] == pytest.approx(plan["seconds_to_end"])
    assert launched["usd_to_end"] == pytest.approx(plan["usd_to_end"])


def test_two_workers_on_two_nodes_are_forecast_slower_than_on_one(scheduler_ledger):
    one = launch(scheduler_ledger, as_run(JOB, workers=2), "one-node")[0]
    two = launch(scheduler_ledger, as_run(JOB, workers=2), "two-nodes", nodes=2)[0]
    ratio = prior_step_s(2, 2) / prior_step_s(2, 1)
    assert ratio > 1
    assert two["seconds_to_end"] - PROFILE.start_up_s - PROFILE.tail_s - 10 * 0.5 == \
        pytest.approx(10 * 100 * PROFILE.step_s * ratio)
    assert two["seconds_to_end"] > one["seconds_to_end"]


def test_the_curve_of_the_configs_last_run_forecasts_the_target(tmp_path):
    data = json.loads(json.dumps(JOB_DATA))
    data["training"].update(target_metric="val_accuracy", target_value=0.8)
    job = parse_job(data, "test job", CATALOG)
    own = Ledger(tmp_path / "own.db", CATALOG)
    dry_run(own, job)
    account = RunAccount(own, "earlier")
    account.open(job, now=0.0)
    account.finish(outcome="COMPLETED", now=5.0, metrics={"history": [
        {"val_accuracy": 0.9 - 0.5 / e} for e in range(1, 11)]})  # 0.8 first at epoch 5
    ledger = Ledger(tmp_path / "scheduler.db", CATALOG)
    record_submitted_plan(ledger, job, submitted_plan(own, job.config_hash()))
    attach_launch_forecast(ledger, as_run(job, workers=2), "t-1", plan_hash=job.config_hash(),
                           num_nodes=1, batch_size=None, num_train_rows=ROWS,
                           catalog=CATALOG)
    launched = ledger.forecasts("t-1")[0]
    epoch_s = 100 * PROFILE.step_s + PROFILE.epoch_overhead_s
    epochs = (launched["seconds_to_target"] - PROFILE.start_up_s) / epoch_s
    assert 4.0 <= epochs <= 5.5 and 4.0 <= launched["epochs_to_target"] <= 5.5


def test_without_a_dry_run_nothing_is_sent_and_the_run_has_no_launch_forecast(tmp_path):
    own = Ledger(tmp_path / "own.db", CATALOG)
    assert submitted_plan(own, JOB.config_hash()) is None
    ledger = Ledger(tmp_path / "scheduler.db", CATALOG)
    assert launch(ledger, as_run(JOB, workers=1), "fc-1") == []


def test_submit_reads_the_plan_from_the_configs_own_ledger(tmp_path):
    data = json.loads(json.dumps(JOB_DATA))
    data["ledger_path"] = str(tmp_path / "own.db")
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    assert stored_plan(str(path)) == (None, None)  # no ledger file yet: nothing, no error
    job = parse_job(data, "test job", CATALOG)
    dry_run(Ledger(tmp_path / "own.db", CATALOG), job)
    plan, unread = stored_plan(str(path))
    assert unread is None and plan is not None and plan["detail"]["num_workers"] == 2
    assert math.isclose(plan["made_at"], 10.0)
    (tmp_path / "own.db").write_text("not a database")
    plan, unread = stored_plan(str(path))  # said, not taken for "no dry run yet"
    assert plan is None and unread is not None


def test_a_profile_that_measured_its_step_is_rescaled_by_the_model_fitted_to_it():
    # As the quickstart's profile measured it on 2 workers of one node: 28.4 ms a step
    # of 64 examples each, 4.4 ms of it in the all-reduce.
    measured = dataclasses.replace(PROFILE, step_s=0.0284, step={
        "num_workers": 2, "num_nodes": 1, "local_bsz": 64, "accum_steps": 1,
        "step_time_s": 0.0284, "sync_time_s": 0.0044})
    params = profile_params(measured)
    assert profiled_size(measured)[1] == 1
    # The fitted model explains the measured step (compute plus all-reduce, combined
    # by its gamma-norm) ...
    compute, sync = params.alpha_c + params.beta_c * 64, params.alpha_r
    top, low = max(compute, sync), min(compute, sync)
    assert top * (1 + (low / top) ** params.gamma) ** (1 / params.gamma) == pytest.approx(
        0.0284, rel=0.02)
    # ... and on one worker it runs all 128 examples with no all-reduce.
    one = rescaled_profile(measured, num_workers=1, num_nodes=1, profiled_batch=64 * 2,
                           batch=128, max_local_bsz=128)
    assert one.step_s == pytest.approx((params.alpha_c + params.beta_c * 128), rel=0.02)
    # The prior alone (10 ms per example against an 80 ms all-reduce) says nearly twice
    # as slow; measured, this job's compute is small and mostly per step, not per example.
    prior_only = rescaled_profile(PROFILE, num_workers=1, num_nodes=1, profiled_batch=128,
                                  batch=128, max_local_bsz=128)
    assert one.step_s / measured.step_s < prior_only.step_s / PROFILE.step_s


def test_without_a_curve_sent_the_newest_scheduled_run_of_the_config_forecasts_the_target(
        tmp_path):
    data = json.loads(json.dumps(JOB_DATA))
    data["training"].update(target_metric="val_accuracy", target_value=0.8)
    job = parse_job(data, "test job", CATALOG)
    own = Ledger(tmp_path / "own.db", CATALOG)
    dry_run(own, job)  # the profile's own 3 epochs only: no finished run in this ledger
    ledger = Ledger(tmp_path / "scheduler.db", CATALOG)

    def submit_and_start(run_id: str, workers: int) -> dict:
        """Submitted with ``--min-workers/--max-workers workers`` (another config hash,
        the same profiled config), then started at that size."""
        submitted = as_run(job, workers=workers)
        record_submitted_plan(ledger, submitted, submitted_plan(own, job.config_hash()))
        attach_launch_forecast(ledger, submitted, run_id,
                               plan_hash=submitted.config_hash(), num_nodes=1,
                               batch_size=None, num_train_rows=ROWS, catalog=CATALOG)
        return ledger.forecasts(run_id)[0]

    first = submit_and_start("t-1", 2)
    assert first["seconds_to_target"] is None  # the profile has no accuracy: no curve
    account = RunAccount(ledger, "t-1")
    account.open(as_run(job, workers=2), now=100.0)
    account.finish(outcome="COMPLETED", now=200.0, metrics={"history": [
        {"val_accuracy": 0.9 - 0.5 / e} for e in range(1, 11)]})  # 0.8 first at epoch 5
    second = submit_and_start("t-2", 1)
    assert 4.0 <= second["epochs_to_target"] <= 5.5


def test_a_one_worker_profile_takes_the_priors_all_reduce_at_the_jobs_own_scale():
    # One worker measured 12 ms a step and no all-reduce: the model keeps the prior's
    # all-reduce in proportion to the job's compute, not the prior's 80 ms.
    alone = dataclasses.replace(PROFILE, num_workers=1, step_s=0.012, step={
        "num_workers": 1, "num_nodes": 1, "local_bsz": 64, "accum_steps": 1,
        "step_time_s": 0.012, "sync_time_s": 0.0})
    two = rescaled_profile(alone, num_workers=2, num_nodes=1, profiled_batch=64, batch=64,
                           max_local_bsz=64)
    assert two.step_s / alone.step_s == pytest.approx(prior_step_s(2, 1, batch=64)
                                                      / prior_step_s(1, 1, batch=64))


def test_the_profiled_size_is_the_one_its_steps_were_measured_on():
    # An elastic job's profile that ran on 1 of its 2 workers: at 1 worker it is the
    # profile as measured, not a 2-worker pace slowed down.
    ran_on_one = dataclasses.replace(PROFILE, num_workers=2, step_s=0.012, step={
        "num_workers": 1, "num_nodes": 1, "local_bsz": 64, "accum_steps": 1,
        "step_time_s": 0.012, "sync_time_s": 0.0})
    same = rescaled_profile(ran_on_one, num_workers=1, num_nodes=1, profiled_batch=64,
                            batch=64, max_local_bsz=64)
    assert same.step_s == ran_on_one.step_s


def test_a_curve_too_short_to_fit_gives_way_to_an_older_one_or_the_profiles(tmp_path):
    data = json.loads(json.dumps(JOB_DATA))
    data["training"].update(target_metric="val_accuracy", target_value=0.8)
    job = parse_job(data, "test job", CATALOG)
    own = Ledger(tmp_path / "own.db", CATALOG)
    curve = dataclasses.replace(PROFILE, val_accuracy=(0.4, 0.6, 0.7))
    record_plan_forecast(own, job, forecast_from_profile(
        curve, rate=rate_of_job(job, CATALOG), num_epochs=10, steps_per_epoch=100),
        now=10.0, detail=dataclasses.asdict(curve))
    account = RunAccount(own, "cancelled")  # a run cancelled after 2 epochs
    account.open(job, now=0.0)
    account.finish(outcome="CANCELLED", now=5.0, metrics={"history": [
        {"val_accuracy": 0.5}, {"val_accuracy": 0.7}]})
    plan = submitted_plan(own, job.config_hash())
    assert plan["detail"][PRIOR_CURVE_KEY] == []  # too short: not taken as the curve
    ledger = Ledger(tmp_path / "scheduler.db", CATALOG)
    record_submitted_plan(ledger, job, plan)
    attach_launch_forecast(ledger, as_run(job, workers=2), "t-1", plan_hash=job.config_hash(),
                           num_nodes=1, batch_size=None, num_train_rows=ROWS,
                           catalog=CATALOG)
    assert ledger.forecasts("t-1")[0]["seconds_to_target"] is not None  # the profile's
