"""The sweep's budget gate over a real ledger: a trial is launched only while the
budget holds every running trial and one more at what a trial really costs."""

from __future__ import annotations

import pytest
from ray.tune.search import Searcher

from costsched.cost.ledger import Ledger
from costsched.cost.prices import load_catalog
from costsched.ray_layer.tune.trial import TRIAL_CAP_KEY, BudgetGate

CATALOG = load_catalog()
ROW = CATALOG.instance("local-cpu")
USD_PER_SLOT_S = ROW.on_demand_usd_per_hour / ROW.num_gpus_per_node / 3600.0


class Points(Searcher):
    """Suggests {"i": n} for ever."""

    def __init__(self):
        super().__init__(metric="score", mode="max")
        self.n = 0

    def suggest(self, trial_id):
        self.n += 1
        return {"i": self.n}

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass


def charge(ledger: Ledger, run_id: str, usd: float, *, finished: bool) -> None:
    """A trial run on one slot that has cost ``usd`` (recomputed from the catalog row)."""
    ledger.start_run(run_id=run_id, job_name="sweep", config_hash="h", instance_type="local-cpu",
                     spot=False, utilisation=0.8, budget_usd=1.0, now=0.0)
    interval = ledger.open_interval(run_id, started_at=0.0, num_workers=1,
                                    accelerators_per_worker=1.0, resources={"CPU": 1.0})
    seconds = usd / USD_PER_SLOT_S
    if finished:
        ledger.close_interval(interval, now=seconds, outcome="COMPLETED")
        ledger.finish_run(run_id, now=seconds, outcome="BUDGET_EXHAUSTED")
    else:
        ledger.heartbeat(interval, now=seconds)


def gate(tmp_path) -> tuple[BudgetGate, Ledger]:
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    return BudgetGate(Points(), ledger=ledger, sweep_name="sw", budget_usd=0.0011,
                      trial_cap_usd=0.0005), ledger


def test_trials_at_their_cap_leave_room_for_a_third_when_two_were_cheap(tmp_path):
    g, ledger = gate(tmp_path)
    charge(ledger, "sw-a", 0.0002, finished=True)
    charge(ledger, "sw-b", 0.0002, finished=True)
    # 0.0004 spent + 0.0005 for c <= 0.0011
    assert g.suggest("c") == {"i": 1, TRIAL_CAP_KEY: 0.0005}


def test_a_running_trial_is_reserved_at_what_the_worst_trial_cost(tmp_path):
    g, ledger = gate(tmp_path)
    charge(ledger, "sw-a", 0.00058, finished=True)  # its budget stop landed past the cap
    g.live.add("b")
    charge(ledger, "sw-b", 0.0001, finished=False)
    spent, reserved, per_trial = g.spend()
    assert spent == pytest.approx(0.00068)
    assert per_trial == pytest.approx(0.00058)
    assert reserved == pytest.approx(0.00048)  # not 0.0004: b may overrun as a did


def test_the_gate_launches_at_the_cap_and_refuses_at_the_overrun(tmp_path):
    # 0.00054 spent + a trial at its 0.0005 cap fits 0.0011; where a trial has been seen
    # to cost 0.00058, 0.00062 + 0.00058 does not.
    fits, ledger = gate(tmp_path / "fits")
    charge(ledger, "sw-a", 0.00050, finished=True)
    charge(ledger, "sw-x", 0.00004, finished=True)
    assert fits.suggest("c") == {"i": 1, TRIAL_CAP_KEY: 0.0005}  # 0.00054 + 0.0005 <= 0.0011
    overran, ledger = gate(tmp_path / "overran")
    charge(ledger, "sw-a", 0.00058, finished=True)
    charge(ledger, "sw-x", 0.00004, finished=True)
    assert overran.suggest("c") is Searcher.FINISHED  # 0.00062 + 0.00058 > 0.0011


class Recording(Points):
    """Points that records what each completed trial told it."""

    def __init__(self):
        super().__init__()
        self.completed: dict[str, tuple[dict | None, bool]] = {}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed[trial_id] = (result, error)


def ended_at_its_cap(ledger: Ledger, run_id: str, *, reported: bool) -> None:
    """A trial run the cap's watchdog ended (:meth:`Ledger.end_at_cap`), after a report
    or while still starting."""
    ledger.start_run(run_id=run_id, job_name="sweep", config_hash="h", instance_type="local-cpu",
                     spot=False, utilisation=0.8, budget_usd=0.0005, now=0.0)
    if reported:
        interval = ledger.open_interval(run_id, started_at=0.0, num_workers=1,
                                        accelerators_per_worker=1.0, resources={"CPU": 1.0})
        ledger.heartbeat(interval, now=5.0)
    assert ledger.end_at_cap(run_id, attempt_started_at=0.0, now=9.0, num_workers=1,
                             accelerators_per_worker=1.0, resources={"CPU": 1.0})


def test_a_trial_ended_at_its_cap_is_scored_not_an_error(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    inner = Recording()
    g = BudgetGate(inner, ledger=ledger, sweep_name="sw", budget_usd=0.01,
                   trial_cap_usd=0.0005, target=0.9, max_concurrent=3, num_trials=3)
    for trial in ("a", "b", "c"):
        assert g.suggest(trial) is not None
    newest = {"objective_usd": 0.0012, "best_val_accuracy": 0.6}
    g.on_trial_result("a", {"objective_usd": 0.0013, "best_val_accuracy": 0.5})
    g.on_trial_result("a", newest)
    ended_at_its_cap(ledger, "sw-a", reported=True)
    ended_at_its_cap(ledger, "sw-b", reported=False)
    charge(ledger, "sw-c", 0.0001, finished=False)  # still running: its process died
    g.on_trial_complete("a", error=True)
    g.on_trial_complete("b", error=True)
    g.on_trial_complete("c", error=True)
    # Tune saw three errors; the searcher sees two trials that reached their caps
    # with what they reached, and one real failure.
    assert inner.completed["a"] == (newest, False)
    result_b, error_b = inner.completed["b"]
    assert not error_b and result_b["best_val_accuracy"] == 0.0
    assert result_b["objective_usd"] == pytest.approx(0.0005 * (2 + 0.9))  # behind any reached
    assert inner.completed["c"] == (None, True)
