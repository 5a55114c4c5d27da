"""Restart costs by phase: measured in the run, kept by the scheduler per attempt, and
used as the job's own restart penalty by the cost-aware policy."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.config.job import DatasetConfig
from costsched.goodput.restart import (
    PHASE_KEYS,
    StartMarks,
    describe,
    phases_from_report,
    restart_seconds,
    worker_phases,
)
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.scheduler.interfaces import JobProgress
from costsched.training.data import Splits, prepare
from tests.support.policy_fakes import FakeThroughput, job, nodes, snapshot
from tests.test_scheduler_fakes import harness, job_text, node
from tests.test_training_core import FakeClock, FakeSession, make_job, make_spec, run_builtin

PHASES = {"stop": 8.0, "scheduling": 0.5, "worker_start": 20.0, "data": 6.0, "restore": 0.5,
          "first_step": 5.0}


def test_worker_phases_split_the_marks_and_never_go_negative():
    # driver begins at 101.5, prepares data for 4 s, the run starts the workers at 105.5
    marks = StartMarks(requested_at=100.0, driver_started_at=101.5, prepare_s=4.0)
    phases = worker_phases(marks=marks, run_started_at=105.5, entered_at=125.5,
                           restore_s=0.5, first_forward_at=128.0, first_step_at=133.0)
    assert phases == {"scheduling": 1.5, "worker_start": 20.0, "data": 6.0, "restore": 0.5,
                      "first_step": 5.0}
    skewed = worker_phases(marks=StartMarks(requested_at=100.0, driver_started_at=99.0),
                           run_started_at=99.0, entered_at=99.5, restore_s=0.0,
                           first_forward_at=100.0, first_step_at=100.5)
    assert skewed["scheduling"] == 0.0  # another host's clock a second behind
    alone = worker_phases(marks=StartMarks(), run_started_at=50.0, entered_at=60.0,
                          restore_s=0.0, first_forward_at=61.0, first_step_at=62.0)
    assert alone == {"scheduling": 0.0, "worker_start": 10.0, "data": 1.0, "restore": 0.0,
                     "first_step": 1.0}  # `costsched train`: no scheduler, no driver


def test_the_penalty_is_the_median_restart_and_ignores_cold_starts():
    cold = dict(PHASES, stop=0.0, worker_start=90.0)
    assert restart_seconds([cold]) is None
    fast, slow = dict(PHASES, stop=2.0), dict(PHASES, stop=60.0)
    assert restart_seconds([cold, fast, dict(PHASES), slow]) == pytest.approx(40.0)
    assert describe(PHASES) == ("40.0 s: stop 8.0, scheduling 0.5, worker start 20.0, "
                                "data 6.0, restore 0.5, first step 5.0")


@pytest.fixture(scope="module")
def digits() -> Splits:
    return prepare(DatasetConfig(name="digits"))


def test_a_resumed_run_reports_its_phases_once_it_has_stepped(digits, tmp_path):
    job = make_job(num_epochs=1)
    clock = FakeClock(start=1000.0)
    (tmp_path / "a").mkdir()
    first = FakeSession(digits.x_train, digits.y_train, clock, tmp_path / "a")
    first.stop_after_batches = 4
    run_builtin(make_spec(job, digits), first, clock)
    assert all(phases_from_report(r) is not None for r in first.reports)

    clock.advance(100.0)  # the scheduler asks for the restart at t; the driver starts at t+2
    requested = clock()
    spec = dataclasses.replace(make_spec(job, digits, run_started_at=requested + 2.0),
                               start_marks=StartMarks(requested_at=requested))
    clock.advance(7.0)  # the worker enters the function at t+7
    (tmp_path / "b").mkdir()
    second = FakeSession(digits.x_train, digits.y_train, clock, tmp_path / "b",
                         resume_from=first.saved[-1][1])
    run_builtin(spec, second, clock)
    phases = phases_from_report(second.reports[0])
    # each batch costs one fake second as it is drawn: the first forward waits for the
    # batches already trained on (drawn and skipped) and its own
    skipped = first.saved[-1][0]
    assert phases == {"scheduling": 2.0, "worker_start": 5.0, "data": skipped + 1.0,
                      "restore": 0.0, "first_step": 0.0}
    assert set(PHASE_KEYS.values()) - {"restart_stop_s"} <= set(second.reports[-1])


def test_the_scheduler_keeps_each_attempts_phases_once_and_plans_with_them(tmp_path):
    h = harness(tmp_path, node("n1", slots=2))
    job_id = h.controller.submit(job_text("r", max_workers=2))
    h.controller.tick()
    for attempt, stop in ((1.0, 0.0), (2.0, 30.0), (2.0, 30.0), (3.0, 50.0)):
        h.runner.script[job_id] = JobProgress(state="running", last_step=1,
                                              restart_phases=dict(PHASES, stop=stop),
                                              attempt_at=attempt)
        h.controller.tick()
    events = [e["detail"] for e in h.controller.logs(job_id) if e["kind"] == "restart-cost"]
    assert len(events) == 3  # one per attempt, the cold start included
    assert events[0].startswith("32.0 s: stop 0.0,")
    # the two restarts that stopped a run: 62 s and 82 s
    assert h.controller.restarts.seconds(job_id) == pytest.approx(72.0)
    view = next(v for v in h.controller._snapshot(h.clock.now(), ()).jobs if v.name == job_id)
    assert view.restart_s == pytest.approx(72.0)


@pytest.mark.parametrize(("restart_s", "resized"), [(None, True), (10.0, True), (600.0, False)])
def test_a_job_whose_restarts_are_dear_is_not_resized_for_a_small_gain(restart_s, resized):
    # Goodput x1.2 beyond 4 GPUs. The default 30 s restart over a 600 s horizon costs 5%
    # and pays; a job measured to need 600 s per restart never repays it.
    def step_time(placement, local_bsz):
        return 1.0 if sum(placement) <= 4 else sum(placement) / (4 * 1.2)
    running = dataclasses.replace(
        job("running", throughput=FakeThroughput(step_time), arrival_time_s=900.0),
        restart_s=restart_s)
    decision = CostAwarePolicy().decide(snapshot([running], nodes(2), {"running": {"n0": 4}}))
    assert (decision.placements["running"] != {"n0": 4}) is resized
