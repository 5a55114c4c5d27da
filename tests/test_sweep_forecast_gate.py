"""The forecast gate over a real ledger: forecasts size trial caps so more trials run
when trials end cheaper than their cap, and the sweep's budget holds even when every
trial runs to its cap (the sum recomputed from the ledger's raw intervals)."""

from __future__ import annotations

import random
import re
import sqlite3

import pytest

from costsched.cost.ledger import Ledger
from costsched.ray_layer.tune.trial import TRIAL_CAP_KEY, BudgetGate
from costsched.sweep.gate import RunningTrial, new_trial_cap, room_usd, trials_held
from costsched.sweep.plan import TARGET_MARGIN, plan_lines
from tests.test_sweep_gate import CATALOG, USD_PER_SLOT_S, Points
from tests.test_sweep_plan import forecast, plan_for

BUDGET, CAP, NEED, FORECAST = 0.006, 0.0013, 0.00065, 0.00052  # the shipped sweep's sizes


class ScriptedSweep:
    """Trials the gate launches, charged to a real ledger on one slot each, as a trial
    run records itself: its run's budget is the cap the gate gave it."""

    def __init__(self, tmp_path, *, need_usd: float | None, max_concurrent: int,
                 num_trials: int = 12):
        self.db = tmp_path / "ledger.db"
        self.ledger = Ledger(self.db, CATALOG)
        self.gate = BudgetGate(Points(), ledger=self.ledger, sweep_name="sw", budget_usd=BUDGET,
                               trial_cap_usd=CAP, need_usd=need_usd,
                               max_concurrent=max_concurrent, num_trials=num_trials)
        self.max_concurrent, self.num_trials = max_concurrent, num_trials
        self.running: dict[str, tuple[int, float]] = {}  # trial -> (interval, its cap)
        self.launched: list[float] = []

    def fill(self) -> None:
        while len(self.running) < self.max_concurrent and len(self.launched) < self.num_trials:
            trial = f"t{len(self.launched)}"
            point = self.gate.suggest(trial)
            if not isinstance(point, dict):
                return
            cap = point[TRIAL_CAP_KEY]
            self.ledger.start_run(run_id=f"sw-{trial}", job_name="sweep-trial", config_hash="h",
                                  instance_type="local-cpu", spot=False, utilisation=0.8,
                                  budget_usd=cap, now=0.0)
            interval = self.ledger.open_interval(f"sw-{trial}", started_at=0.0, num_workers=1,
                                                 accelerators_per_worker=1.0,
                                                 resources={"CPU": 1.0})
            self.running[trial] = (interval, cap)
            self.launched.append(cap)

    def spend(self, trial: str, usd: float) -> None:
        self.ledger.heartbeat(self.running[trial][0], now=usd / USD_PER_SLOT_S)

    def end(self, trial: str, usd: float) -> None:
        interval, cap = self.running.pop(trial)
        assert usd <= cap * (1 + 1e-9)  # the watchdog ends a trial at its cap
        self.ledger.close_interval(interval, now=usd / USD_PER_SLOT_S, outcome="COMPLETED")
        self.ledger.finish_run(f"sw-{trial}", now=usd / USD_PER_SLOT_S, outcome="COMPLETED")
        self.gate.on_trial_complete(trial)

    def run_waves(self, spend_usd: float) -> int:
        """Fill the slots, end every trial at ``spend_usd`` or its cap; until none launch."""
        while True:
            self.fill()
            if not self.running:
                return len(self.launched)
            for trial, (_, cap) in list(self.running.items()):
                self.end(trial, min(spend_usd, cap))

    def charged_usd(self) -> float:
        """Every charge, recomputed from the raw interval rows and the catalog price."""
        with sqlite3.connect(self.db) as db:
            rows = db.execute("SELECT started_at, ended_at, num_workers, accelerators_per_worker"
                              " FROM intervals").fetchall()
        return sum((end - start) * n * acc * USD_PER_SLOT_S for start, end, n, acc in rows)


@pytest.mark.parametrize("max_concurrent", [1, 3])
def test_forecasts_launch_more_trials_than_caps_when_trials_end_cheaper(tmp_path,
                                                                        max_concurrent):
    by_cap = ScriptedSweep(tmp_path / "cap", need_usd=None, max_concurrent=max_concurrent)
    by_forecast = ScriptedSweep(tmp_path / "fc", need_usd=NEED, max_concurrent=max_concurrent)
    n_cap, n_forecast = by_cap.run_waves(FORECAST), by_forecast.run_waves(FORECAST)
    assert n_forecast > n_cap
    assert (n_cap, n_forecast) == (10, 11)  # trials_held, the dry run's figure, agrees
    assert n_forecast == trials_held(budget_usd=BUDGET, cap_usd=CAP, need_usd=NEED,
                                     spend_usd=FORECAST, num_trials=12,
                                     max_concurrent=max_concurrent).num_trials
    assert by_forecast.charged_usd() <= BUDGET


def test_concurrent_trials_get_caps_shrunk_towards_the_forecast_to_fit_more(tmp_path):
    by_cap = ScriptedSweep(tmp_path / "cap", need_usd=None, max_concurrent=6)
    by_forecast = ScriptedSweep(tmp_path / "fc", need_usd=NEED, max_concurrent=6)
    by_cap.fill()
    by_forecast.fill()
    assert len(by_cap.running) == 4  # 4 x 0.0013 <= 0.006 < 5 x 0.0013
    assert len(by_forecast.running) == 6
    assert all(NEED <= cap <= CAP for cap in by_forecast.launched)
    assert sum(by_forecast.launched) <= BUDGET * (1 + 1e-12)


def test_a_lone_trial_keeps_its_whole_cap_while_the_budget_allows(tmp_path):
    sweep = ScriptedSweep(tmp_path, need_usd=NEED, max_concurrent=1)
    sweep.fill()
    assert sweep.launched == [CAP]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_concurrent", [1, 2, 4])
def test_the_budget_holds_when_every_trial_runs_to_its_cap(tmp_path, seed, max_concurrent):
    """Adversarial: forecasts said $0.00052, but every trial spends its whole cap, in a
    random order of launches, partial spends and ends."""
    rng = random.Random(seed)
    sweep = ScriptedSweep(tmp_path, need_usd=NEED, max_concurrent=max_concurrent, num_trials=20)
    spent: dict[str, float] = {}
    while True:
        sweep.fill()
        if not sweep.running:
            break
        trial = rng.choice(sorted(sweep.running))
        cap = sweep.running[trial][1]
        if rng.random() < 0.5:
            spent[trial] = min(cap, spent.get(trial, 0.0) + rng.uniform(0, cap))
            sweep.spend(trial, spent[trial])
        else:
            sweep.end(trial, cap)
    total = sweep.charged_usd()
    assert total == pytest.approx(sum(sweep.launched))  # each ran to its cap
    assert total <= BUDGET * (1 + 1e-9)
    cap_gate = trials_held(budget_usd=BUDGET, cap_usd=CAP, need_usd=CAP, spend_usd=CAP,
                           num_trials=20, max_concurrent=max_concurrent).num_trials
    assert len(sweep.launched) >= cap_gate


@pytest.mark.parametrize(("room", "need", "other", "cap"), [
    (0.006, 0.0013, 0, 0.0013),    # no forecast: the whole cap when it fits
    (0.0012, 0.0013, 0, None),     # ... and nothing when it does not
    (0.0012, 0.00065, 0, 0.0012),  # forecast: the room left, above the need
    (0.0006, 0.00065, 0, None),    # below the need: refused
    (0.003, 0.00065, 3, 0.00105),  # 3 other slots hold 0.00195: the rest
    (0.002, 0.00065, 3, 0.00065),  # ... shrunk to the need, never below it
    (0.0025, 0.00065, 2, 0.0012),  # 2 other slots hold 0.0013: the rest, below the cap
])
def test_new_trial_cap(room, need, other, cap):
    got = new_trial_cap(room_usd=room, cap_usd=0.0013, need_usd=need, other_slots=other)
    assert got == (None if cap is None else pytest.approx(cap))


def test_room_counts_running_trials_at_their_own_cap_and_the_overrun():
    running = [RunningTrial(cap_usd=0.001, spent_usd=0.0004),
               RunningTrial(cap_usd=0.0007, spent_usd=0.0009)]  # past its cap: nothing more
    room = room_usd(budget_usd=0.006, spent_usd=0.002, running=running, overrun_usd=0.0001)
    assert room == pytest.approx(0.006 - 0.002 - (0.001 + 0.0001 - 0.0004) - 0.0 - 0.0001)


def held_figures(lines: list[str]) -> tuple[int, ...]:
    text = next(line for line in lines if line.startswith("trials held"))
    found = re.search(r"(\d+) by cap, (\d+) by forecast when each ends.*?(\d+) by cap, "
                      r"(\d+) by forecast when each runs to its cap", text)
    assert found, text
    return tuple(int(n) for n in found.groups())


def test_dry_run_says_how_many_trials_the_budget_holds_by_forecast_and_by_cap(tmp_path):
    cfg, plan = plan_for(tmp_path, forecast(0.002, True), trial_budget_usd=0.008,
                         budget_usd=0.04, max_concurrent_trials=4, num_trials=20)
    assert plan.forecast_cap_usd == pytest.approx(
        max(plan.min_cap_usd, (0.002 + plan.end_usd) * TARGET_MARGIN))
    lines = plan_lines(cfg, plan)
    ends_cap, ends_forecast, worst_cap, worst_forecast = held_figures(lines)
    assert ends_forecast > ends_cap and worst_forecast > worst_cap == 5  # 5 x 0.008 = 0.04
    assert any(line.startswith("gate           forecast") for line in lines)
    off, plan = plan_for(tmp_path, forecast(0.002, True), trial_budget_usd=0.008,
                         budget_usd=0.04, max_concurrent_trials=4, num_trials=20,
                         forecast_gate=False)
    ends_cap, ends_forecast, worst_cap, worst_forecast = held_figures(plan_lines(off, plan))
    assert (ends_cap, worst_cap) == (ends_forecast, worst_forecast)


def test_an_unreachable_target_sizes_caps_by_the_forecast_to_the_last_epoch(tmp_path):
    _, plan = plan_for(tmp_path, forecast(None, False), trial_budget_usd=0.006)
    assert plan.forecast_usd == 0.005  # usd_to_end
    assert plan.forecast_cap_usd == pytest.approx(min(0.006, 0.005 * TARGET_MARGIN))
