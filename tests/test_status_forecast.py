"""``costsched status`` shows a running job's refreshed forecast: seconds left and dollars
in all to its target (to its last epoch without one), ``unreachable`` when the fitted curve
levels off below the target, ``-`` before a forecast exists. The forecasts are written to a
real SQLite ledger the way a run's driver writes them (accountant + curve tracker)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from costsched.cli.jobs import format_status
from costsched.config.job import JobConfig
from costsched.config.scheduler import AutoscalingSection, SchedulerConfig
from costsched.cost.accounting import RunAccount, record_plan_forecast
from costsched.cost.forecast import CurveTracker, Forecast, current_forecast
from costsched.cost.formatting import format_duration
from costsched.cost.ledger import Ledger
from costsched.cost.prices import rate_of_job
from costsched.policy.registry import make_policy
from costsched.scheduler.controller import SchedulerController
from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.state import JobStore
from tests.test_scheduler_fakes import CATALOG, FakeClock, FakeCluster, FakeRunner, job_text, node

EPOCH_S = 60.0
DRIVER_START_S = 10.0  # the driver's session starts after the scheduler's start event


def curve(ceiling: float, epochs: int) -> list[float]:
    """Validation accuracy on a saturating power law levelling off at ``ceiling``."""
    return [ceiling - 0.4 * epoch ** -0.7 for epoch in range(1, epochs + 1)]


@dataclasses.dataclass
class Live:
    controller: SchedulerController
    clock: FakeClock
    runner: FakeRunner
    ledger: Ledger
    job_id: str

    @property
    def run_id(self) -> str:
        return self.controller.store.get(self.job_id).run_id

    @property
    def job(self) -> JobConfig:
        return self.controller.job_config(self.job_id)

    def row(self):
        (row,) = self.controller.status()
        return row

    def cells(self) -> dict[str, str]:
        """The job's row of the status table, by column header."""
        header, row = format_status([dataclasses.asdict(self.row())]).splitlines()[:2]
        starts = [header.index(name.strip()) for name in header.split("  ") if name.strip()]
        return {header[a:b].strip(): row[a:b].strip()
                for a, b in zip(starts, starts[1:] + [None], strict=True)}


def live(tmp_path: Path, *, target: float | None = 0.9) -> Live:
    """A RUNNING job (30 epochs, ``target`` val_accuracy) on a controller reading a ledger."""
    data = yaml.safe_load(job_text("fc"))
    data["training"].update(target_metric="val_accuracy" if target else None,
                            target_value=target or 1.0)
    clock = FakeClock()
    runner = FakeRunner(clock)
    state = tmp_path / "scheduler.db"
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    controller = SchedulerController(
        store=JobStore(state), policy=make_policy("cost-aware"), cluster=FakeCluster(node("n0")),
        runner=runner, clock=clock, catalog=CATALOG, ledger=ledger,
        config=SchedulerConfig(policy="cost-aware", state_path=str(state),
                               autoscaling=AutoscalingSection()))
    job_id = controller.submit(yaml.safe_dump(data))
    controller.tick()
    assert controller.store.get(job_id).state == "RUNNING"
    return Live(controller, clock, runner, ledger, job_id)


class Session:
    """One driver session of the job's run, as its ledger callback records it: an interval
    from ``started_at`` heartbeaten at each epoch's report, and after each the forecast
    refreshed from the session's own curve."""

    def __init__(self, h: Live, *, started_at: float, first_epoch: int = 1):
        training = h.job.training
        self.h, self.started_at, self.epoch, self.reports = h, started_at, first_epoch - 1, 0
        self.account = RunAccount(h.ledger, h.run_id)
        self.account.open(h.job, now=started_at)
        self.accountant = self.account.accountant(
            run_started_at=started_at, accelerators_per_worker=1.0, resources={"GPU": 1.0})
        self.tracker = CurveTracker(
            num_epochs=training.num_epochs, rate=rate_of_job(h.job, CATALOG),
            target=training.target_value if training.target_metric else None,
            run_started_at=started_at)

    def report(self, accuracy: float) -> Forecast | None:
        """The next epoch's report, ``EPOCH_S`` after the last; the forecast it refreshed."""
        self.epoch, self.reports = self.epoch + 1, self.reports + 1
        now = self.started_at + self.reports * EPOCH_S
        metrics = {"attempt_started_at": self.started_at, "world_size": 1,
                   "epoch": self.epoch, "val_accuracy": accuracy, "wall_time": now}
        self.accountant.on_report(metrics, now=now)
        forecast = self.tracker.on_report(metrics | {"cost_usd": self.account.cost_usd()})
        if forecast is not None:
            self.account.record_forecast(forecast, job=self.h.job, now=now)
        return forecast


def run_session(h: Live, accuracy: list[float], *, started_at: float) -> Forecast | None:
    """A session from epoch 1 reporting ``accuracy``; its last refreshed forecast."""
    session = Session(h, started_at=started_at)
    return [session.report(value) for value in accuracy][-1]


def newest(h: Live) -> tuple[dict, float] | None:
    return current_forecast(h.ledger.forecasts(h.run_id), h.ledger.intervals(h.run_id))


def test_status_shows_the_refreshed_eta_and_dollars_to_the_target(tmp_path):
    h = live(tmp_path)
    started_at = h.clock.now() + DRIVER_START_S
    forecast = run_session(h, curve(0.95, 4), started_at=started_at)
    assert forecast is not None and forecast.target_reachable
    assert 4 < forecast.epochs_to_target < 30
    h.clock.t = started_at + 4 * EPOCH_S + 5.0  # status asked 5 s after the 4th epoch
    row = h.row()
    # seconds count from the session's start, not the scheduler's start event
    assert row.forecast_eta_s == pytest.approx(
        started_at + forecast.seconds_to_target - h.clock.now())
    assert row.forecast_eta_s == pytest.approx(
        (forecast.epochs_to_target - 4) * EPOCH_S - 5.0)
    assert (row.forecast_usd, row.target_reachable) == (forecast.usd_to_target, True)
    cells = h.cells()
    assert cells["ETA"] == format_duration(row.forecast_eta_s)
    assert cells["FORECAST $"] not in ("-", "unreachable")
    assert float(cells["FORECAST $"]) == pytest.approx(forecast.usd_to_target, rel=1e-2)


def test_status_says_unreachable_when_the_curve_levels_off_below_the_target(tmp_path):
    h = live(tmp_path)
    forecast = run_session(h, curve(0.7, 4), started_at=h.clock.now())
    assert forecast is not None and forecast.target_reachable is False
    h.runner.script[h.job_id] = JobProgress(state="running", eta_s=600.0)
    h.controller.tick()
    row = h.row()
    assert (row.forecast_eta_s, row.forecast_usd, row.target_reachable) == (None, None, False)
    assert row.eta_s == 600.0  # the step rate's ETA to the last step gives way in the table
    assert (h.cells()["ETA"], h.cells()["FORECAST $"]) == ("unreachable", "unreachable")


def test_before_a_refreshed_forecast_the_eta_is_the_step_rates_and_no_dollars(tmp_path):
    h = live(tmp_path)
    # A launch forecast (from a profile) is not the run's refreshed one.
    record_plan_forecast(h.ledger, h.job, Forecast(
        source="profile", at_epoch=0, seconds_to_end=900.0, usd_to_end=0.5,
        seconds_to_target=300.0, usd_to_target=0.2, epochs_to_target=5.0,
        target_reachable=True), now=h.clock.now())
    assert run_session(h, curve(0.95, 1), started_at=h.clock.now()) is None  # one epoch
    h.runner.script[h.job_id] = JobProgress(state="running", eta_s=245.0)
    h.controller.tick()
    row = h.row()
    assert (row.forecast_eta_s, row.forecast_usd, row.target_reachable) == (None, None, None)
    assert (h.cells()["ETA"], h.cells()["FORECAST $"]) == ("4m05s", "-")


def test_without_a_target_status_shows_the_forecast_to_the_last_epoch(tmp_path):
    h = live(tmp_path, target=None)
    started_at = h.clock.now()
    forecast = run_session(h, curve(0.95, 3), started_at=started_at)
    assert forecast is not None and forecast.seconds_to_target is None
    h.clock.t = started_at + 3 * EPOCH_S
    row = h.row()
    assert row.forecast_eta_s == pytest.approx((30 - 3) * EPOCH_S)
    assert (row.forecast_usd, row.target_reachable) == (forecast.usd_to_end, None)


def test_a_resumed_run_shows_no_forecast_until_its_new_session_refreshes_one(tmp_path):
    h = live(tmp_path)
    first = h.clock.now()
    run_session(h, curve(0.95, 4), started_at=first)
    assert newest(h) is not None
    RunAccount(h.ledger, h.run_id).finish(outcome="PREEMPTED", now=first + 4 * EPOCH_S,
                                         metrics={})
    assert newest(h) is None  # no session runs
    resumed = first + 900.0
    session = Session(h, started_at=resumed, first_epoch=5)
    assert session.report(curve(0.95, 5)[-1]) is None  # one epoch: no pace yet
    h.clock.t = resumed + EPOCH_S
    assert newest(h) is None and h.row().forecast_eta_s is None  # the old one is stale
    session.report(curve(0.95, 6)[-1])
    forecast = session.report(curve(0.95, 7)[-1])  # three epochs: a curve
    assert forecast is not None and forecast.seconds_to_target is not None
    row, session_started_at = newest(h)
    assert (row["at_epoch"], session_started_at) == (7, resumed)
    h.clock.t = resumed + 3 * EPOCH_S
    assert h.row().forecast_eta_s == pytest.approx(forecast.seconds_to_target - 3 * EPOCH_S)


def test_a_failure_restart_within_a_session_keeps_the_sessions_start(tmp_path):
    h = live(tmp_path)
    started_at = h.clock.now()
    account = RunAccount(h.ledger, h.run_id)
    account.open(h.job, now=started_at)
    accountant = account.accountant(run_started_at=started_at, accelerators_per_worker=1.0,
                                    resources={"GPU": 1.0})
    accountant.on_report({"attempt_started_at": started_at, "world_size": 1},
                         now=started_at + 50.0)
    accountant.on_failure(now=started_at + 70.0)
    retry = started_at + 80.0
    accountant.on_report({"attempt_started_at": retry, "world_size": 1}, now=retry + 100.0)
    forecast = Forecast(source="curve", at_epoch=3, seconds_to_end=2000.0, usd_to_end=1.0)
    account.record_forecast(forecast, job=h.job, now=retry + 100.0)
    intervals = h.ledger.intervals(h.run_id)
    assert [i["outcome"] for i in intervals] == ["FAILED", "RUNNING"]
    row, session_started_at = current_forecast(h.ledger.forecasts(h.run_id), intervals)
    assert (row["at_epoch"], session_started_at) == (3, started_at)
