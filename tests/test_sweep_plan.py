"""A sweep's trial plan from a measured profile: caps that reach ASHA's first rung, and
the dry run's word when no trial can reach the target within the budget."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.cost.forecast import Forecast, RunProfile
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.sweep.config import load_sweep
from costsched.sweep.plan import plan_lines, plan_trials
from tests.test_sweep_core import write_sweep

CATALOG = load_catalog()
USD_PER_WORKER_S = 0.0893 / 2 / 3600  # local-cpu, per slot
PROFILE = RunProfile(num_workers=2, start_up_s=40.0, step_s=0.03, epoch_overhead_s=0.4,
                     tail_s=2.0, profiled_s=55.0)


def plan_for(tmp_path, forecast: Forecast, **changes):
    sweep = load_sweep(write_sweep(tmp_path, **changes), CATALOG)
    plan = plan_trials(sweep.config, PROFILE, forecast,
                       rate=rate_of_job(sweep.base_job, CATALOG), steps_per_epoch=125)
    return sweep.config, plan


def forecast(usd_to_target: float | None = None, reachable: bool | None = None) -> Forecast:
    return Forecast(source="profile", at_epoch=0, seconds_to_end=200.0, usd_to_end=0.005,
                    usd_to_target=usd_to_target, target_reachable=reachable)


def test_a_cap_below_start_up_is_raised_so_a_trial_reaches_its_first_rung(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(0.002, True), trial_budget_usd=0.0005)
    start_up = 40.0 * 2 * USD_PER_WORKER_S
    assert plan.start_up_usd == pytest.approx(start_up)
    epoch = (125 * 0.03 + 0.4) * 2 * USD_PER_WORKER_S
    # 3 x the measured start-up (it varies), the rung, an epoch past it, the run's end.
    first_rung = 3 * start_up + cfg.scheduler.grace_usd + epoch + 2.0 * 2 * USD_PER_WORKER_S
    assert plan.trial_cap_usd == pytest.approx(first_rung)
    assert plan.trial_cap_usd > 0.0005
    assert plan.asha_max_usd == pytest.approx(plan.trial_cap_usd - start_up)
    assert any("raised from $0.0005" in line for line in plan_lines(cfg, plan))


def test_a_large_enough_cap_is_kept(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(0.002, True), trial_budget_usd=0.004)
    assert plan.trial_cap_usd == 0.004
    assert not any("raised" in line for line in plan_lines(cfg, plan))


def test_dry_run_says_no_trial_reaches_the_target_and_the_budget_it_would_need(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(0.01, True), trial_budget_usd=0.004,
                         budget_usd=0.006)
    text = "\n".join(plan_lines(cfg, plan))
    needed = (0.01 + 2.0 * 2 * USD_PER_WORKER_S) * 1.25
    assert plan.needed_trial_usd == pytest.approx(needed)
    assert "NO TRIAL       is sure to reach the target" in text
    assert f"trial_budget_usd >= ${needed:.3g}"[:-1] in text


def test_dry_run_says_when_the_curve_levels_off_below_the_target(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(None, False))
    assert "levels off below the target" in "\n".join(plan_lines(cfg, plan))


def test_dry_run_says_when_the_budget_holds_no_trial(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(0.002, True), trial_budget_usd=0.0005,
                         budget_usd=0.0006)
    assert plan.trial_cap_usd > cfg.budget_usd
    assert any(line.startswith("NO TRIAL FITS") for line in plan_lines(cfg, plan))
    assert dataclasses.replace(plan, trial_cap_usd=0.0005).asha_max_usd > 0
