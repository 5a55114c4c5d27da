"""Forecasts of time and dollars: the learning-curve fit, the profile's arithmetic, the
refresh from a live run's reports, and forecasts stored with their run in a real
SQLite ledger and shown beside what the run did."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from costsched.config.job import parse_job
from costsched.cost.accounting import RunAccount, record_plan_forecast
from costsched.cost.forecast import (
    CurveTracker,
    RunProfile,
    fit_curve,
    forecast_from_profile,
    forecast_lines,
    measured_profile,
    profile_steps,
    relative_error,
)
from costsched.cost.ledger import Ledger
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.cost.report import forecasts_frame, runs_frame
from costsched.scheduler.status import forecast_figures

CATALOG = load_catalog()
LOCAL_CPU_USD_PER_WORKER_S = 0.0893 / 2 / 3600  # the catalog's local-cpu row, per slot
JOB = parse_job({
    "name": "fc", "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [16]},
    "training": {"num_epochs": 20, "global_batch_size": 64, "target_metric": "val_accuracy",
                 "target_value": 0.9},
    "scaling": {"min_workers": 2, "max_workers": 2, "accelerator_resource": "cpu_slot",
                "use_gpu": False},
    "checkpoint": {"interval_steps": 30}, "cost": {"instance_type": "local-cpu"},
}, "test job", CATALOG)
RATE = rate_of_job(JOB, CATALOG)
PROFILE = RunProfile(num_workers=2, start_up_s=30.0, step_s=0.02, epoch_overhead_s=0.5,
                     tail_s=2.0, profiled_s=40.0)


def law(epoch, ceiling=0.97, scale=0.4, exponent=0.8):
    return ceiling - scale * np.asarray(epoch, dtype=float) ** -exponent


def test_fit_recovers_a_saturating_curve_and_the_epoch_it_crosses_a_target():
    curve = fit_curve(law(np.arange(1, 9)))
    assert curve is not None
    assert curve.ceiling == pytest.approx(0.97, abs=0.01)
    # The true crossing of 0.9: 0.97 - 0.4 e^-0.8 = 0.9  =>  e = (0.4 / 0.07) ** 1.25
    assert curve.epochs_to(0.9) == pytest.approx((0.4 / 0.07) ** 1.25, rel=0.1)
    assert curve.epochs_to(0.99) is None  # above the ceiling: out of reach


def test_fit_needs_three_epochs_and_never_levels_off_above_one():
    assert fit_curve([0.5, 0.7]) is None
    curve = fit_curve([0.6, 0.9, 0.99, 1.0])
    assert curve is not None and curve.ceiling <= 1.0


def test_three_noisy_epochs_do_not_put_a_near_target_out_of_reach():
    # The sweep base job's first three epochs as measured (a noise dip on the third):
    # the run reached 0.95 at epoch 4. A fit free to bend flat called it out of reach.
    curve = fit_curve([0.801, 0.9375, 0.9465])
    assert curve is not None and curve.epochs_to(0.95) is not None
    assert curve.epochs_to(0.95) <= 6


def test_a_curve_that_has_levelled_off_still_puts_a_far_target_out_of_reach():
    curve = fit_curve([0.50, 0.58, 0.61, 0.62, 0.625, 0.627, 0.628, 0.628])
    assert curve is not None and curve.ceiling < 0.7
    assert curve.epochs_to(0.8) is None


def test_profile_forecast_adds_start_up_epochs_and_end_and_prices_them_as_the_ledger():
    forecast = forecast_from_profile(PROFILE, rate=RATE, num_epochs=20, steps_per_epoch=100)
    seconds = 30.0 + 20 * (100 * 0.02 + 0.5) + 2.0
    assert forecast.seconds_to_end == pytest.approx(seconds)
    assert forecast.usd_to_end == pytest.approx(seconds * 2 * LOCAL_CPU_USD_PER_WORKER_S)
    assert forecast.seconds_to_target is None  # no curve, no prior run: no target figure


def test_profile_forecast_to_target_follows_a_prior_runs_curve():
    forecast = forecast_from_profile(PROFILE, rate=RATE, num_epochs=20, steps_per_epoch=100,
                                     target=0.9, prior_curve=list(law(np.arange(1, 8))))
    epochs = np.ceil((0.4 / 0.07) ** 1.25)
    assert forecast.epochs_to_target == pytest.approx(epochs, abs=1)
    assert forecast.seconds_to_target == pytest.approx(
        30.0 + forecast.epochs_to_target * 2.5)
    text = "\n".join(forecast_lines(forecast, PROFILE, num_epochs=20, target="val 0.9",
                                    budget_usd=1.0))
    assert f"at epoch {forecast.epochs_to_target:.0f}" in text
    short = forecast_from_profile(PROFILE, rate=RATE, num_epochs=3, steps_per_epoch=100,
                                  target=0.9, prior_curve=list(law(np.arange(1, 8))))
    assert short.target_reachable is False  # the curve crosses after the last epoch


def test_live_refresh_uses_the_runs_own_pace_and_marks_the_target_once_reached():
    tracker = CurveTracker(num_epochs=10, target=0.9, rate=RATE, run_started_at=1000.0,
                           tail_s=2.0)
    forecasts = []
    for epoch, acc in enumerate([0.5, 0.7, 0.8, 0.86, 0.91], start=1):
        seconds = 30.0 + 3.0 * epoch  # start-up 30 s, then 3 s an epoch
        forecasts.append(tracker.on_report({
            "epoch": epoch, "val_accuracy": acc, "wall_time": 1000.0 + seconds,
            "cost_usd": seconds * 2 * LOCAL_CPU_USD_PER_WORKER_S, "world_size": 2}))
    assert forecasts[0] is None  # one epoch: no pace yet
    assert forecasts[2].seconds_to_end == pytest.approx(30.0 + 3.0 * 10 + 2.0)
    assert forecasts[-1].seconds_to_target == pytest.approx(30.0 + 3.0 * 5)
    assert forecasts[-1].epochs_to_target == 5
    assert tracker.on_report({"loss": 0.1, "wall_time": 1100.0}) is None


def test_measured_profile_separates_start_up_pace_and_end():
    history = [{"epoch_ended_at": 100.0 + 43.0 + 3.0 * i, "epoch_train_s": 2.5,
                "epoch_steps": 50, "val_accuracy": 0.5} for i in range(3)]
    profile = measured_profile(history, num_workers=2, started_at=100.0, charged_until=150.0)
    assert profile.step_s == pytest.approx(0.05)
    assert profile.epoch_overhead_s == pytest.approx(0.5)
    assert profile.start_up_s == pytest.approx(40.0)  # epoch 1 ended at 43 s, 3 s of it steady
    assert profile.tail_s == pytest.approx(150.0 - 149.0)
    assert profile_steps(JOB, 1000) == 100 and profile_steps(JOB, 40) == 40


def test_forecast_is_stored_before_launch_taken_by_the_next_run_and_compared(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    forecast = forecast_from_profile(PROFILE, rate=RATE, num_epochs=20, steps_per_epoch=100)
    record_plan_forecast(ledger, JOB, forecast, now=10.0, detail=dataclasses.asdict(PROFILE))
    account = RunAccount(ledger, "run-1")
    account.open(JOB, now=100.0)
    actual_s = forecast.seconds_to_end * 1.1  # the run took 10% longer than forecast
    accountant = account.accountant(run_started_at=100.0, accelerators_per_worker=1.0,
                                    resources={"cpu_slot": 1.0})
    accountant.on_report({"attempt_started_at": 100.0, "world_size": 2}, now=100.0 + actual_s)
    account.finish(outcome="COMPLETED", now=100.0 + actual_s, metrics={})
    RunAccount(ledger, "other").open(dataclasses.replace(JOB, name="other"), now=200.0)
    row = runs_frame(ledger).set_index("run_id").loc["run-1"]
    assert row["forecast_s"] == pytest.approx(forecast.seconds_to_end)
    assert row["time_error_pct"] == pytest.approx(100 * 0.1 / 1.1)
    assert row["cost_error_pct"] == pytest.approx(100 * 0.1 / 1.1)
    assert np.isnan(runs_frame(ledger).set_index("run_id").loc["other"]["forecast_s"])
    stored = forecasts_frame(ledger, "run-1")
    assert list(stored["source"]) == ["profile"]


def test_relative_error_is_unknown_without_an_actual():
    assert relative_error(110.0, 100.0) == pytest.approx(0.1)
    assert relative_error(None, 100.0) is None and relative_error(1.0, 0.0) is None


def test_a_running_run_shows_its_newest_refreshed_forecast(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    account = RunAccount(ledger, "live")
    account.open(JOB, now=100.0)
    tracker = CurveTracker(num_epochs=10, target=None, rate=RATE, run_started_at=100.0)
    feed = account.accountant(run_started_at=100.0, accelerators_per_worker=1.0, resources={})
    for epoch in (1, 2, 3):
        report = {"epoch": epoch, "val_accuracy": 0.5 + 0.1 * epoch,
                  "wall_time": 130.0 + 3.0 * epoch, "cost_usd": 0.001, "world_size": 2,
                  "attempt_started_at": 100.0}
        feed.on_report(report, now=130.0 + 3.0 * epoch)  # as the run's driver writes it
        forecast = tracker.on_report(report)
        if forecast is not None:
            account.record_forecast(forecast, job=JOB, now=130.0 + 3.0 * epoch)
    row = runs_frame(ledger).set_index("run_id").loc["live"]
    assert row["forecast_s"] == pytest.approx(30.0 + 3.0 * 10)  # ETA from the run's start
    assert pd.isna(row["time_error_pct"])  # nothing to compare with yet
    # `costsched status` says the same: 60 s from the start, 20 s of them left at 140.
    assert forecast_figures(ledger, "live", has_target=False, now=140.0)[
        "forecast_eta_s"] == pytest.approx(20.0)


def test_a_restart_that_skips_an_epoch_waits_for_two_consecutive_ones():
    # Epoch 2 was never reported (the worker died in it; the restart resumed from a
    # checkpoint in epoch 2 and next reported epoch 3): no pace yet, and no error,
    # which in the Train controller would have failed the run.
    tracker = CurveTracker(num_epochs=10, target=0.9, rate=RATE, run_started_at=0.0)

    def report(epoch: int, wall: float):
        return tracker.on_report({"epoch": epoch, "val_accuracy": 0.5 + 0.05 * epoch,
                                  "wall_time": wall, "cost_usd": wall * 1e-5,
                                  "world_size": 2})

    assert report(1, 40.0) is None
    assert report(3, 95.0) is None
    forecast = report(4, 100.0)
    assert forecast is not None and forecast.at_epoch == 4
    assert forecast.seconds_to_end == pytest.approx(100.0 + 6 * 5.0)  # 5 s an epoch


def test_the_pace_leaves_out_a_gap_across_a_restart():
    # Epochs 1-2 at 5 s each; a worker dies in epoch 3, whose report comes 60 s later
    # from the restarted group. The pace stays 5 s, not the 60 s across the restart.
    tracker = CurveTracker(num_epochs=10, target=None, rate=RATE, run_started_at=0.0)
    forecast = None
    for epoch, wall, attempt in ((1, 40.0, 0.0), (2, 45.0, 0.0), (3, 105.0, 80.0)):
        forecast = tracker.on_report({"epoch": epoch, "val_accuracy": 0.5 + 0.05 * epoch,
                                      "wall_time": wall, "cost_usd": wall * 1e-5,
                                      "world_size": 2, "attempt_started_at": attempt})
    assert forecast is not None
    assert forecast.seconds_to_end == pytest.approx(105.0 + 7 * 5.0)
