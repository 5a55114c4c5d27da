"""The SQLite cost ledger, the run accountant that feeds it, and the reports read from it.

Prices used by hand below: g4dn.12xlarge on demand is 3.912 $/h for 4 GPUs, i.e.
0.978 $ per GPU-hour; its power is 70 W per GPU plus 250 W per node (62.5 W per GPU).
"""

from __future__ import annotations

import io
import json
import sqlite3

import pandas as pd
import pytest

from costsched.cli.main import main as cli_main
from costsched.cost.accounting import RunAccountant, cost_so_far_usd
from costsched.cost.ledger import SCHEMA, Ledger
from costsched.cost.prices import JobRate, load_catalog
from costsched.cost.report import intervals_frame, plot_costs, render, runs_frame
from costsched.errors import ConfigError, CostschedError

CATALOG = load_catalog()
USD_PER_GPU_S = 0.978 / 3600


def rate_per_worker_s(usd: float) -> JobRate:
    return JobRate(instance_type="t", spot=False, usd_per_accelerator_hour=usd * 3600,
                   accelerators_per_worker=1.0)
RESOURCES = {"CPU": 4.0, "GPU": 1.0}


@pytest.fixture
def ledger(tmp_path):
    return Ledger(tmp_path / "sub" / "ledger.db", CATALOG)


def start(ledger: Ledger, run_id: str = "run-1", now: float = 1000.0, **overrides) -> None:
    kwargs = dict(run_id=run_id, job_name="job", config_hash="abc", instance_type="g4dn.12xlarge",
                  spot=False, utilisation=0.5, budget_usd=10.0, now=now)
    ledger.start_run(**(kwargs | overrides))


def open_at(ledger: Ledger, started_at: float, num_workers: int = 2, run_id: str = "run-1") -> int:
    return ledger.open_interval(run_id, started_at=started_at, num_workers=num_workers,
                                accelerators_per_worker=1.0, resources=RESOURCES)


def test_ledger_file_is_created_in_wal_mode(ledger):
    assert ledger.path.is_file()
    with sqlite3.connect(ledger.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_interval_is_charged_dollars_energy_and_accelerator_seconds(ledger):
    start(ledger)
    interval = open_at(ledger, 1000.0)
    ledger.heartbeat(interval, now=1900.0)
    ledger.close_interval(interval, now=2800.0, outcome="COMPLETED")
    (row,) = ledger.intervals("run-1")
    assert (row["started_at"], row["ended_at"], row["outcome"]) == (1000.0, 2800.0, "COMPLETED")
    assert row["accelerator_s"] == 3600.0  # 2 GPUs x 1800 s
    assert row["cost_usd"] == pytest.approx(0.978)  # 3.912 * 2/4 * 0.5 h
    # (70 W * 0.5 utilisation * 2 + 250 W * 2/4) * 0.5 h = 97.5 Wh
    assert row["energy_kwh"] == pytest.approx(0.0975)
    assert row["lost_s"] == 0.0 and row["lost_usd"] == 0.0
    assert ledger.run_cost_usd("run-1") == pytest.approx(0.978)


def test_heartbeat_keeps_charges_of_a_driver_that_never_closed(ledger):
    start(ledger)
    interval = open_at(ledger, 1000.0)
    ledger.heartbeat(interval, now=1360.0)
    ledger.heartbeat(interval, now=1200.0)  # a late, older heartbeat does not shrink it
    (row,) = ledger.intervals("run-1")
    assert row["outcome"] == "RUNNING" and row["ended_at"] == 1360.0
    assert row["cost_usd"] == pytest.approx(2 * 360 * USD_PER_GPU_S)


@pytest.mark.parametrize(
    ("checkpoint_at", "expected_lost_s"),
    [(1600.0, 400.0), (None, 1000.0)],  # no checkpoint: the whole interval is lost
)
def test_failed_interval_charges_time_since_last_checkpoint_as_lost(ledger, checkpoint_at,
                                                                   expected_lost_s):
    start(ledger)
    interval = open_at(ledger, 1000.0)
    if checkpoint_at is not None:
        ledger.heartbeat(interval, now=checkpoint_at, checkpointed=True)
    ledger.heartbeat(interval, now=1900.0)
    ledger.close_interval(interval, now=2000.0, outcome="FAILED")
    (row,) = ledger.intervals("run-1")
    assert row["outcome"] == "FAILED"
    assert row["lost_s"] == expected_lost_s
    assert row["lost_usd"] == pytest.approx(2 * expected_lost_s * USD_PER_GPU_S)
    assert row["cost_usd"] == pytest.approx(2 * 1000 * USD_PER_GPU_S)  # lost is inside, not extra


def test_failure_then_restart_is_contiguous_and_sums_to_one_charge(ledger, tmp_path):
    start(ledger)
    first = open_at(ledger, 1000.0)
    ledger.heartbeat(first, now=1600.0, checkpointed=True)
    ledger.close_interval(first, now=2000.0, outcome="FAILED")
    second = open_at(ledger, 2000.0)
    ledger.close_interval(second, now=2800.0, outcome="COMPLETED")
    rows = ledger.intervals("run-1")
    assert [r["attempt"] for r in rows] == [1, 2]
    assert rows[0]["ended_at"] == rows[1]["started_at"]  # no gap, no overlap

    whole = Ledger(tmp_path / "whole.db", CATALOG)
    start(whole)
    single = open_at(whole, 1000.0)
    whole.close_interval(single, now=2800.0, outcome="COMPLETED")
    (one,) = whole.intervals("run-1")
    for key in ("cost_usd", "energy_kwh", "accelerator_s"):
        assert sum(r[key] for r in rows) == pytest.approx(one[key])
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(0.978)


def test_closing_twice_does_not_charge_twice(ledger):
    start(ledger)
    interval = open_at(ledger, 1000.0)
    ledger.heartbeat(interval, now=1500.0, checkpointed=True)
    ledger.close_interval(interval, now=1800.0, outcome="FAILED")
    ledger.close_interval(interval, now=5000.0, outcome="FAILED")
    ledger.heartbeat(interval, now=9000.0)  # a closed interval ignores heartbeats too
    (row,) = ledger.intervals("run-1")
    assert row["ended_at"] == 1800.0 and row["lost_s"] == 300.0


def test_overlapping_or_concurrent_intervals_are_refused(ledger):
    start(ledger)
    first = open_at(ledger, 1000.0)
    with pytest.raises(CostschedError, match="still open"):
        open_at(ledger, 1500.0)
    ledger.close_interval(first, now=2000.0, outcome="FAILED")
    with pytest.raises(CostschedError, match="may not overlap"):
        open_at(ledger, 1999.0)
    assert len(ledger.intervals("run-1")) == 1


def test_unknown_interval_outcome_and_instance_type_are_refused(ledger):
    with pytest.raises(CostschedError, match="unknown instance type"):
        start(ledger, instance_type="g9.mega")
    assert ledger.runs() == []
    start(ledger)
    interval = open_at(ledger, 1000.0)
    with pytest.raises(ValueError, match="interval outcome"):
        ledger.close_interval(interval, now=1100.0, outcome="DONE")


@pytest.mark.parametrize(
    ("run_outcome", "interval_outcome"),
    [("COMPLETED", "COMPLETED"), ("TARGET_REACHED", "COMPLETED"),
     ("BUDGET_EXHAUSTED", "STOPPED"), ("FAILED", "FAILED")],
)
def test_finish_run_closes_the_open_interval(ledger, run_outcome, interval_outcome):
    start(ledger)
    interval = open_at(ledger, 1000.0)
    ledger.heartbeat(interval, now=1100.0, checkpointed=True)
    ledger.finish_run("run-1", now=1400.0, outcome=run_outcome, final_metrics={"x": 1.0})
    (row,) = ledger.intervals("run-1")
    assert (row["outcome"], row["ended_at"]) == (interval_outcome, 1400.0)
    assert row["lost_s"] == (300.0 if interval_outcome == "FAILED" else 0.0)
    (run,) = ledger.runs()
    assert (run["outcome"], run["ended_at"]) == (run_outcome, 1400.0)
    assert json.loads(run["final_metrics"]) == {"x": 1.0}


def test_record_target_keeps_the_first_value(ledger):
    start(ledger)
    ledger.record_target("run-1", usd_to_target=0.25)
    ledger.record_target("run-1", usd_to_target=0.75)
    assert ledger.runs()[0]["usd_to_target"] == 0.25


# -- the accountant ------------------------------------------------------------------------

def report(attempt: float, world_size: int, checkpointed: bool = False) -> dict:
    return {"attempt_started_at": attempt, "world_size": world_size,
            "checkpointed": checkpointed, "loss": 1.0}


def scripted_run(ledger: Ledger) -> None:
    """A run with a failure, a restart at the same size and an elastic resize 2 -> 4."""
    start(ledger)
    accountant = RunAccountant(ledger, "run-1", run_started_at=1000.0,
                               accelerators_per_worker=1.0, resources=RESOURCES)
    accountant.on_report(report(1000.0, 2), now=1100.0)
    accountant.on_report(report(1000.0, 2, checkpointed=True), now=1300.0)
    accountant.on_report(report(1000.0, 2), now=1450.0)
    accountant.on_failure(now=1500.0)
    accountant.on_failure(now=1510.0)  # a second failure notice has nothing open to close
    accountant.on_report(report(1550.0, 2), now=1700.0)
    accountant.on_report(report(1550.0, 2, checkpointed=True), now=1800.0)
    accountant.on_report(report(2000.0, 4), now=2100.0)  # new attempt, new size: resized
    accountant.on_report(report(2000.0, 4, checkpointed=True), now=2400.0)
    ledger.finish_run("run-1", now=2500.0, outcome="COMPLETED",
                      final_metrics={"test_accuracy": 0.93})


def test_accountant_turns_a_scripted_run_into_contiguous_intervals(ledger):
    scripted_run(ledger)
    rows = ledger.intervals("run-1")
    got = [(r["attempt"], r["started_at"], r["ended_at"], r["num_workers"], r["outcome"],
            r["lost_s"]) for r in rows]
    assert got == [
        (1, 1000.0, 1500.0, 2, "FAILED", 200.0),  # lost: failure 1500 - checkpoint 1300
        (2, 1500.0, 2000.0, 2, "RESIZED", 0.0),
        (3, 2000.0, 2500.0, 4, "COMPLETED", 0.0),
    ]
    # 2*500 + 2*500 + 4*500 = 4000 GPU-seconds at 0.978 $/GPU-hour
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(4000 * USD_PER_GPU_S)
    assert ledger.run_cost_usd("run-1") == pytest.approx(1.086666666666)


def test_worker_cost_estimate_after_a_restart_matches_the_ledger(ledger):
    scripted_run(ledger)
    # At 1700 the restarted worker knows the checkpoint of 1300 (600 GPU-s charged then).
    estimate = cost_so_far_usd(usd_at_checkpoint=2 * 300 * USD_PER_GPU_S,
                               checkpoint_wall_time=1300.0, now=1700.0, world_size=2,
                               rate=rate_per_worker_s(USD_PER_GPU_S))
    ledger_at_1700 = 2 * 500 * USD_PER_GPU_S + 2 * 200 * USD_PER_GPU_S
    assert estimate == pytest.approx(ledger_at_1700)


@pytest.mark.parametrize(
    ("usd_at_checkpoint", "checkpoint_wall_time", "now", "world_size", "expected"),
    [
        (0.5, 100.0, 160.0, 2, 0.5 + 60 * 2 * 0.001),
        (0.0, 100.0, 100.0, 4, 0.0),
        (0.3, 200.0, 150.0, 2, 0.3),  # a clock behind the checkpoint never refunds
    ],
)
def test_cost_so_far_usd_formula(usd_at_checkpoint, checkpoint_wall_time, now, world_size,
                                 expected):
    assert cost_so_far_usd(usd_at_checkpoint=usd_at_checkpoint,
                           checkpoint_wall_time=checkpoint_wall_time, now=now,
                           world_size=world_size, rate=rate_per_worker_s(0.001)) == (
        pytest.approx(expected)
    )


# -- reports -------------------------------------------------------------------------------

def test_runs_frame_totals_equal_the_sum_of_intervals(ledger):
    scripted_run(ledger)
    start(ledger, run_id="run-2", now=3000.0, spot=True)  # started, never ran an interval
    frame = runs_frame(ledger).set_index("run_id")
    run = frame.loc["run-1"]
    intervals = intervals_frame(ledger, "run-1")
    assert run["num_intervals"] == 3 and run["num_restarts"] == 2
    assert run["cost_usd"] == pytest.approx(intervals["cost_usd"].sum())
    assert run["cost_usd"] == pytest.approx(4000 * USD_PER_GPU_S)
    assert run["accelerator_hours"] == pytest.approx(4000 / 3600)
    assert run["lost_s"] == 200.0
    assert run["lost_usd"] == pytest.approx(2 * 200 * USD_PER_GPU_S)
    assert run["energy_kwh"] == pytest.approx(intervals["energy_kwh"].sum())
    assert run["wall_s"] == 1500.0
    assert run["test_accuracy"] == 0.93 and run["outcome"] == "COMPLETED"
    empty = frame.loc["run-2"]
    assert empty["num_intervals"] == 0 and empty["num_restarts"] == 0
    assert empty["cost_usd"] == 0.0 and bool(empty["spot"]) is True


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_render_parses_back_to_the_same_numbers(ledger, fmt):
    scripted_run(ledger)
    frame = runs_frame(ledger)
    text = render(frame, fmt)
    back = pd.read_csv(io.StringIO(text)) if fmt == "csv" else pd.DataFrame(json.loads(text))
    assert list(back.columns) == list(frame.columns)
    for column in ("cost_usd", "lost_usd", "energy_kwh", "accelerator_hours", "wall_s"):
        assert back[column].tolist() == pytest.approx(frame[column].tolist())
    assert back["num_restarts"].tolist() == [2]


def test_render_table_of_an_empty_ledger(ledger):
    assert render(runs_frame(ledger), "table") == "no runs recorded yet"


def test_cli_report_csv_is_parseable(ledger, capsys):
    scripted_run(ledger)
    assert cli_main(["report", "--ledger", str(ledger.path), "--format", "csv"]) == 0
    back = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert back.loc[0, "run_id"] == "run-1"
    assert back.loc[0, "cost_usd"] == pytest.approx(4000 * USD_PER_GPU_S)


def test_cli_report_intervals_json(ledger, capsys):
    scripted_run(ledger)
    assert cli_main(["report", "--ledger", str(ledger.path), "--format", "json",
                     "--intervals", "--run", "run-1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in rows] == ["FAILED", "RESIZED", "COMPLETED"]


def test_cli_report_on_a_missing_ledger_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert cli_main(["report", "--ledger", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("costsched report: error: no ledger at")
    assert not missing.exists()


def test_plot_costs_writes_a_png(ledger, tmp_path):
    scripted_run(ledger)
    path = plot_costs(ledger, tmp_path / "plots" / "cost.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_cli_report_on_a_file_that_is_not_a_ledger_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    path.write_text("run_id,cost_usd\nrun-1,0.5\n")
    assert cli_main(["report", "--ledger", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("costsched report: error:")
    assert path.read_text() == "run_id,cost_usd\nrun-1,0.5\n"


def test_an_attempt_killed_before_its_driver_opened_the_run_is_still_charged(tmp_path):
    from costsched.config.job import parse_job
    from costsched.cost.accounting import RunAccount
    from tests.conftest import quickstart_dict

    catalog = load_catalog()
    job = parse_job(quickstart_dict(), "quickstart")
    ledger = Ledger(tmp_path / "ledger.db", catalog)
    account = RunAccount(ledger, "job-1")
    account.open(job, now=100.0)  # as the runner does when the driver never got that far
    account.charge_start_up(attempt_started_at=100.0, now=130.0, num_workers=2,
                            accelerators_per_worker=1.0, resources={"CPU": 1.0})
    account.abandon(outcome="PREEMPTED")
    (interval,) = ledger.intervals("job-1")
    assert (interval["started_at"], interval["ended_at"], interval["lost_s"]) == (100, 130, 30)
    row = catalog.instance(job.cost.instance_type)
    expected = row.on_demand_usd_per_hour / row.num_gpus_per_node * 2 * 30 / 3600
    assert ledger.run_cost_usd("job-1") == pytest.approx(expected)
    assert [r["outcome"] for r in ledger.runs()] == ["PREEMPTED"]
    # a second attempt, killed while starting too, is charged after the first
    account.charge_start_up(attempt_started_at=140.0, now=150.0, num_workers=1,
                            accelerators_per_worker=1.0, resources={"CPU": 1.0})
    account.abandon(outcome="PREEMPTED")
    assert [(i["started_at"], i["ended_at"]) for i in ledger.intervals("job-1")] == [
        (100, 130), (140, 150)]


def test_a_run_killed_from_outside_is_charged_until_the_kill_with_the_stops_outcome(tmp_path):
    from costsched.config.job import parse_job
    from costsched.cost.accounting import RunAccount
    from tests.conftest import quickstart_dict

    catalog = load_catalog()
    job = parse_job(quickstart_dict(), "quickstart")
    ledger = Ledger(tmp_path / "ledger.db", catalog)
    account = RunAccount(ledger, "job-1")
    account.open(job, now=100.0)
    interval = ledger.open_interval("job-1", started_at=100.0, num_workers=2,
                                    accelerators_per_worker=1.0, resources={"CPU": 1.0})
    ledger.heartbeat(interval, now=115.0, checkpointed=True)
    ledger.heartbeat(interval, now=120.0)
    account.abandon(outcome="CANCELLED", now=160.0)  # killed at 160, 40 s after the beat
    (row,) = ledger.intervals("job-1")
    assert (row["ended_at"], row["lost_s"]) == (160.0, 45.0)  # since its checkpoint at 115
    price = catalog.instance(job.cost.instance_type)
    assert ledger.run_cost_usd("job-1") == pytest.approx(
        price.on_demand_usd_per_hour / price.num_gpus_per_node * 2 * 60 / 3600)
    assert [r["outcome"] for r in ledger.runs()] == ["CANCELLED"]


def test_an_interval_is_billed_at_the_node_type_it_ran_on(ledger):
    start(ledger)  # declared g4dn.12xlarge, on-demand
    first = open_at(ledger, 1000.0)
    ledger.close_interval(first, now=1900.0, outcome="RESIZED")
    second = ledger.open_interval("run-1", started_at=1900.0, num_workers=2,
                                  accelerators_per_worker=1.0, resources=RESOURCES,
                                  node_type="g5.12xlarge", node_spot=True)
    ledger.close_interval(second, now=2800.0, outcome="COMPLETED")
    declared, moved = ledger.intervals("run-1")
    # Independent arithmetic from the catalog's list prices: node price x share x hours.
    assert declared["cost_usd"] == pytest.approx(3.912 * 2 / 4 * 0.25)
    assert (moved["instance_type"], moved["spot"]) == ("g5.12xlarge", 1)
    assert moved["cost_usd"] == pytest.approx(2.2688 * 2 / 4 * 0.25)
    with pytest.raises(ConfigError, match="unknown instance type `nope`"):
        ledger.open_interval("run-1", started_at=2800.0, num_workers=1,
                             accelerators_per_worker=1.0, resources=RESOURCES,
                             node_type="nope")


def test_a_ledger_file_from_before_node_pricing_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace("    node_type TEXT,\n    node_spot INTEGER,\n", "")
    assert "node_type" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO runs (run_id, job_name, config_hash, instance_type, spot,"
                   " utilisation, budget_usd, started_at) VALUES"
                   " ('old', 'j', 'h', 'g4dn.12xlarge', 0, 0.5, 10, 0)")
        db.execute("INSERT INTO intervals (run_id, attempt, started_at, ended_at, num_workers,"
                   " accelerators_per_worker, resources, outcome) VALUES"
                   " ('old', 1, 0, 3600, 4, 1, '{}', 'COMPLETED')")
    upgraded = Ledger(path, CATALOG)
    (row,) = upgraded.intervals("old")
    assert row["cost_usd"] == pytest.approx(3.912)  # the run's declared type
    assert row["node_type"] is None
