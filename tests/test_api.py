"""The public training API on an in-process session: a user's own loop checkpoints,
stops when asked, resumes where it stopped, and reaches its target."""

from __future__ import annotations

import sys
import textwrap

import pytest

import costsched.api as cs
from costsched.config.entrypoint import import_entrypoint
from costsched.config.job import CostSection, JobConfig, TrainingConfig
from costsched.errors import ConfigError
from costsched.training.run import Run, RunSpec
from tests.test_training_core import RATE, USD_PER_WORKER_S, FakeClock, FakeSession


class StepSession(FakeSession):
    """A fake worker whose outside stop request arrives after ``stop_at`` fake seconds."""

    def __init__(self, clock, root, resume_from=None, stop_at: float | None = None):
        super().__init__(None, None, clock, root, resume_from=resume_from)
        self.stop_at = stop_at

    def stop_requested(self):
        return "PREEMPTED" if self.stop_at is not None and self.clock() >= self.stop_at else None


def user_job(**cost) -> JobConfig:
    return JobConfig(name="user", entrypoint="tests.support.userloop:train_loop",
                     entrypoint_config={"steps": 60, "lr": 0.05},
                     training=TrainingConfig(num_epochs=1, global_batch_size=16,
                                             target_metric="val_accuracy", target_value=1.0),
                     cost=CostSection(**cost))


def run_user(job: JobConfig, session: StepSession, clock: FakeClock) -> Run:
    """The job's entrypoint on one fake worker; each step takes one fake second."""
    config = dict(job.entrypoint_config) | {"on_step": lambda: clock.advance(1.0)}
    run = Run(RunSpec(job=job, rate=RATE, run_started_at=clock(), entrypoint_config=config),
              session, clock=clock)
    with cs.bound(run):
        import_entrypoint(job.entrypoint)(config)
        run.close()
    return run


def test_a_user_loop_runs_to_its_end_with_costs_in_every_report(tmp_path):
    clock = FakeClock()
    session = StepSession(clock, tmp_path)
    run_user(user_job(), session, clock)
    steps = [r["global_step"] for r in session.reports]
    assert steps == [10, 20, 30, 40, 50, 60, 60]  # six checkpoints and the closing report
    assert session.reports[-1]["final"] is True
    assert session.reports[-1]["stop_reason"] == "COMPLETED"
    assert session.reports[-1]["cost_usd"] == pytest.approx(60 * USD_PER_WORKER_S)
    assert [s for s, _ in session.saved] == [10, 20, 30, 40, 50, 60]


def test_a_preempted_user_loop_resumes_from_its_checkpoint(tmp_path):
    clock = FakeClock()
    first = StepSession(clock, tmp_path / "a", stop_at=clock() + 23)
    run_user(user_job(), first, clock)
    assert first.reports[-1]["stop_reason"] == "PREEMPTED"
    stopped_at, checkpoint = first.saved[-1]
    assert stopped_at == 25  # the first stop poll after the request, not the step-30 one
    resumed = StepSession(clock, tmp_path / "b", resume_from=checkpoint)
    run_user(user_job(), resumed, clock)
    assert resumed.reports[0]["resumed_from_step"] == 25
    assert [r["global_step"] for r in resumed.reports][:2] == [30, 40]
    assert resumed.reports[-1]["stop_reason"] == "COMPLETED"
    assert resumed.reports[-1]["cost_usd"] > first.reports[-1]["cost_usd"]


def test_a_user_budget_stops_the_loop_before_it_is_crossed(tmp_path):
    clock = FakeClock()
    session = StepSession(clock, tmp_path)
    budget = 35 * USD_PER_WORKER_S  # 35 fake seconds
    run_user(user_job(budget_usd=budget, stop_reserve_s=2.0), session, clock)
    assert session.reports[-1]["stop_reason"] == "BUDGET_EXHAUSTED"
    assert max(r["cost_usd"] for r in session.reports) <= budget


def test_reaching_the_target_in_a_report_stops_the_run(tmp_path):
    clock = FakeClock()
    run = Run(RunSpec(job=user_job(), rate=RATE, run_started_at=clock()),
              StepSession(clock, tmp_path), clock=clock)
    with cs.bound(run):
        clock.advance(5.0)
        cs.report({"val_accuracy": 0.5})
        assert not cs.should_stop() and cs.stop_reason() is None
        clock.advance(5.0)
        cs.report({"val_accuracy": 1.0})
        assert cs.should_stop() and cs.stop_reason() == "TARGET_REACHED"
        assert cs.usd_to_target() == pytest.approx(10 * USD_PER_WORKER_S)
        assert cs.cost_usd() == pytest.approx(10 * USD_PER_WORKER_S)


def test_the_api_outside_a_run_says_how_to_start_one():
    with pytest.raises(RuntimeError, match="entrypoint"):
        cs.get_context()


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module_xyz:train", "cannot import module `no_such_module_xyz`"),
    ("tests.test_api:no_such_function", "has no attribute `no_such_function`"),
    ("tests.support.userloop:time", "is not a function"),
    ("not a spec", "must read `package.module:function`"),
])
def test_an_entrypoint_that_cannot_be_imported_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        import_entrypoint(spec)


def test_a_module_that_raises_on_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "broken_user_code.py").write_text(textwrap.dedent("""
        raise ValueError("missing data file")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="broken_user_code.*ValueError: missing data file"):
        import_entrypoint("broken_user_code:train")
    sys.modules.pop("broken_user_code", None)
