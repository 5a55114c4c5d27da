"""A trial's hard cap when the trial cannot stop itself (pure: a real SQLite ledger, no Ray).

The watchdog ends a run at its cap: it charges the run to that moment and marks it
BUDGET_EXHAUSTED, and the ledger takes no charge from the dying run after that.
Charges are recomputed from the price row and the interval's times.
"""

from __future__ import annotations

import threading
import time

import pytest

from costsched.config.job import parse_job
from costsched.cost.accounting import RunAccount, seconds_to_cap
from costsched.cost.ledger import Ledger
from costsched.cost.prices import load_catalog
from costsched.errors import CostschedError
from costsched.ray_layer.tune.cap import KILL_MARGIN_S, CapWatchdog
from tests.conftest import quickstart_dict

CATALOG = load_catalog()


def capped_job(budget_usd: float, workers: int | tuple[int, int] = 2):
    low, high = workers if isinstance(workers, tuple) else (workers, workers)
    data = quickstart_dict()
    data["scaling"].update(min_workers=low, max_workers=high)
    data["cost"].update(budget_usd=budget_usd)
    return parse_job(data, "capped job", CATALOG)


def usd_per_s(job) -> float:
    """Independent of the code under test: the catalog's node price split per slot."""
    row = CATALOG.instance(job.cost.instance_type)
    node = row.spot_usd_per_hour if job.cost.spot else row.on_demand_usd_per_hour
    return (node / row.num_gpus_per_node * job.scaling.accelerators_per_worker
            * job.scaling.max_workers / 3600.0)


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "ledger.db", CATALOG)


def test_seconds_to_cap_is_what_the_money_left_buys_less_the_margins():
    assert seconds_to_cap(budget_usd=1.0, spent_usd=0.25, usd_per_s=0.01) == pytest.approx(75)
    assert seconds_to_cap(budget_usd=1.0, spent_usd=0.25, usd_per_s=0.01, since_s=5,
                          margin_s=2) == pytest.approx(68)
    assert seconds_to_cap(budget_usd=1.0, spent_usd=2.0, usd_per_s=0.01) == 0.0
    assert seconds_to_cap(budget_usd=float("inf"), spent_usd=0, usd_per_s=1) == float("inf")
    assert seconds_to_cap(budget_usd=1.0, spent_usd=0, usd_per_s=0.0) == float("inf")


def test_a_run_killed_before_its_first_report_is_charged_to_the_kill_and_no_more(ledger):
    job = capped_job(0.001)
    account = RunAccount(ledger, "trial-1")
    watchdog = CapWatchdog(job, "trial-1", ledger=ledger, catalog=CATALOG)
    account.open(job, now=watchdog.started + 0.01)
    assert watchdog.seconds_left(watchdog.started + 10) == pytest.approx(
        0.001 / usd_per_s(job) - 10 - KILL_MARGIN_S)

    kill_at = watchdog.started + 0.001 / usd_per_s(job) - KILL_MARGIN_S
    assert watchdog.stop_at_cap(now=kill_at)
    (interval,) = ledger.intervals("trial-1")
    assert interval["outcome"] == "FAILED"  # its work is lost: nothing was checkpointed
    assert interval["cost_usd"] == pytest.approx(usd_per_s(job) * (kill_at - watchdog.started))
    assert account.cost_usd() <= job.cost.budget_usd
    assert account.outcome() == "BUDGET_EXHAUSTED"
    with pytest.raises(CostschedError, match="has ended"):  # the dying run's late report
        ledger.open_interval("trial-1", started_at=kill_at, num_workers=2,
                             accelerators_per_worker=1.0, resources={})
    assert not watchdog.stop_at_cap(now=kill_at + 5)  # once
    assert account.cost_usd() == pytest.approx(interval["cost_usd"])


def test_an_elastic_run_is_timed_at_the_size_it_runs_and_closed_at_the_kill(ledger):
    job = capped_job(0.001, workers=(1, 2))
    watchdog = CapWatchdog(job, "trial-2", ledger=ledger, catalog=CATALOG)
    RunAccount(ledger, "trial-2").open(job, now=watchdog.started)
    interval = ledger.open_interval("trial-2", started_at=watchdog.started, num_workers=1,
                                    accelerators_per_worker=1.0, resources={})
    ledger.heartbeat(interval, now=watchdog.started + 10)
    one_worker = usd_per_s(job) / 2  # it runs 1 of its 2 workers
    assert watchdog.seconds_left(watchdog.started + 12) == pytest.approx(
        (0.001 - 10 * one_worker) / one_worker - 2 - KILL_MARGIN_S)
    assert watchdog.stop_at_cap(now=watchdog.started + 30)
    (row,) = ledger.intervals("trial-2")
    assert row["ended_at"] == pytest.approx(watchdog.started + 30)  # the kill, not the beat
    assert row["cost_usd"] == pytest.approx(one_worker * 30)


def test_a_dead_earlier_attempt_is_charged_to_its_last_heartbeat_only(ledger):
    job = capped_job(0.001)
    RunAccount(ledger, "trial-3").open(job, now=100.0)
    old = ledger.open_interval("trial-3", started_at=100.0, num_workers=2,
                               accelerators_per_worker=1.0, resources={})
    ledger.heartbeat(old, now=110.0)  # then its driver died, leaving it open
    watchdog = CapWatchdog(job, "trial-3", ledger=ledger, catalog=CATALOG)
    assert watchdog.stop_at_cap(now=watchdog.started + 5)
    first, second = ledger.intervals("trial-3")
    assert first["ended_at"] == pytest.approx(110.0)  # not the hours until this kill
    assert second["started_at"] == pytest.approx(watchdog.started)
    assert second["ended_at"] == pytest.approx(watchdog.started + 5)


def test_a_run_that_ended_itself_is_left_alone(ledger):
    job = capped_job(0.001)
    watchdog = CapWatchdog(job, "trial-4", ledger=ledger, catalog=CATALOG)
    account = RunAccount(ledger, "trial-4")
    account.open(job, now=watchdog.started)
    account.finish(outcome="TARGET_REACHED", now=watchdog.started + 1, metrics={})
    assert not watchdog.stop_at_cap(now=watchdog.started + 100)
    assert account.outcome() == "TARGET_REACHED" and ledger.intervals("trial-4") == []


def test_the_watchdog_ends_the_process_at_the_cap_unless_the_run_ends_first(ledger):
    # A cap worth 2.5 s of the job's workers: the watchdog fires ~0.5 s after the start.
    job = capped_job(usd_per_s(capped_job(1.0)) * (KILL_MARGIN_S + 0.5))
    exited = threading.Event()
    RunAccount(ledger, "trial-5").open(job, now=time.time())
    with CapWatchdog(job, "trial-5", ledger=ledger, catalog=CATALOG,
                     exit=lambda code: exited.set()) as watchdog:
        assert exited.wait(30), "the watchdog never fired"
    assert watchdog.fired and RunAccount(ledger, "trial-5").outcome() == "BUDGET_EXHAUSTED"
    assert RunAccount(ledger, "trial-5").cost_usd() <= job.cost.budget_usd

    # The run finishes by itself before the cap; the watchdog, still watching past the
    # cap, leaves it as it ended.
    ended = threading.Event()
    account = RunAccount(ledger, "trial-6")
    account.open(job, now=time.time())
    with CapWatchdog(job, "trial-6", ledger=ledger, catalog=CATALOG,
                     exit=lambda code: ended.set()) as watchdog:
        account.finish(outcome="COMPLETED", now=time.time(), metrics={})
        assert not ended.wait(1.5)  # past the cap
    assert not watchdog.fired and account.outcome() == "COMPLETED"
