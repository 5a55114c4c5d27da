"""Bad input to the scheduler: one clear line, and the state file untouched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from costsched.config.scheduler import load_scheduler_config
from costsched.errors import ConfigError, CostschedError
from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.state import SCHEMA, JobStore
from tests.test_scheduler_fakes import dump, harness, job_text, node

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def busy(tmp_path):
    """A controller with a running job and a finished one."""
    h = harness(tmp_path, node("n0"))
    running = h.controller.submit(job_text("running", priority=1))
    done = h.controller.submit(job_text("done"))
    h.tick()
    h.runner.script[running] = JobProgress(state="finished", outcome="COMPLETED")
    h.tick()
    h.runner.script[done] = JobProgress(state="finished", outcome="COMPLETED")
    h.tick()
    assert h.state(done) == "COMPLETED"
    return h, done


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda c, done: c.cancel("nope-9"), CostschedError, "unknown job id `nope-9`"),
        (lambda c, done: c.logs("done-3"), CostschedError, "did you mean `done-2`"),
        (lambda c, done: c.cancel(done), CostschedError, "already ended (COMPLETED)"),
        (lambda c, done: c.submit("name: [unclosed"), ConfigError, "not valid YAML"),
        (lambda c, done: c.submit("- a list"), ConfigError, "top level must be a mapping"),
        (lambda c, done: c.submit(job_text(trainig={})), ConfigError,
         "unknown key `trainig`; did you mean `training`?"),
        (lambda c, done: c.submit(job_text(), {"budget": 3}), ConfigError,
         "unknown override `budget`"),
        (lambda c, done: c.submit(job_text(), {"min_workers": 5, "max_workers": 2}), ConfigError,
         "lower min_workers or raise max_workers"),
        (lambda c, done: c.submit(job_text(), {"budget_usd": -1}), ConfigError,
         "`cost.budget_usd` must be > 0"),
        (lambda c, done: c.submit(job_text(), {"priority": 1100}), ConfigError,
         "`cost.priority` must be in [-100, 100], got 1100"),
        (lambda c, done: c.submit(job_text(accelerators_per_worker=0.5)), ConfigError,
         "whole number >= 1"),
        (lambda c, done: c.submit(job_text().replace("instance_type: four",
                                                     "instance_type: fuor")), ConfigError,
         "did you mean `four`"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(busy, call, error, words):
    h, done = busy
    before = dump(h.path)
    with pytest.raises(error) as caught:
        call(h.controller, done)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
    assert dump(h.path) == before


def test_overrides_replace_the_config_and_are_stored(tmp_path):
    h = harness(tmp_path, node("n0", slots=4))
    job_id = h.controller.submit(job_text("tuned"), {
        "priority": 3, "budget_usd": 7.5, "min_workers": 2, "max_workers": 4})
    job = h.job(job_id)
    assert (job.priority, job.budget_usd, job.min_workers, job.max_workers) == (3, 7.5, 2, 4)
    assert "budget_usd: 7.5" in job.config_yaml
    h.tick()
    assert h.job(job_id).workers == 4  # a whole node: a shape the policy allows


def test_a_job_asking_for_another_accelerator_resource_is_refused(tmp_path):
    h = harness(tmp_path, node("n0"), accelerator_resource="cpu_slot")
    with pytest.raises(ConfigError, match="hands out 'cpu_slot'"):
        h.controller.submit(job_text())


def test_state_transitions_are_checked_and_repeats_are_no_ops(tmp_path):
    store = JobStore(tmp_path / "s.db")
    job = store.add_job(name="j", config_yaml="{}", config_hash="h", priority=0, budget_usd=1.0,
                        min_workers=1, max_workers=1, now=0.0)
    assert store.transition(job.job_id, "RUNNING", now=1.0, kind="started", workers=1)
    assert not store.transition(job.job_id, "RUNNING", now=2.0, kind="started")
    assert store.transition(job.job_id, "COMPLETED", now=3.0, kind="finished")
    with pytest.raises(CostschedError, match="is COMPLETED; it cannot become RUNNING"):
        store.transition(job.job_id, "RUNNING", now=4.0, kind="started")
    record = store.get(job.job_id)
    assert (record.state, record.workers, record.ended_at) == ("COMPLETED", 0, 3.0)
    assert [e["kind"] for e in store.events(job.job_id)] == ["submitted", "started", "finished"]


def test_a_state_file_from_before_total_steps_is_upgraded_and_keeps_its_jobs(tmp_path):
    # The file an earlier version made, with a job in it: its jobs table lacks total_steps.
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("\n".join(line for line in SCHEMA.splitlines() if "total_steps" not in line))
    db.execute("INSERT INTO jobs (job_id, name, config_yaml, config_hash, priority, budget_usd,"
               " min_workers, max_workers, state, submitted_at, last_step) VALUES"
               " ('j-1', 'j', '{}', 'h', 0, 1.0, 1, 2, 'QUEUED', 0.0, 5)")
    db.commit()
    db.close()
    assert "total_steps" not in _columns(path)
    store = JobStore(path)
    kept = store.get("j-1")
    assert (kept.name, kept.max_workers, kept.last_step, kept.total_steps) == ("j", 2, 5, None)
    store.update("j-1", total_steps=40)
    again = JobStore(path).get("j-1")  # reopening changes nothing
    assert (again.last_step, again.total_steps) == (5, 40)
    assert _columns(path).count("total_steps") == 1


def test_adding_a_column_another_process_just_added_is_not_an_error(tmp_path):
    # Two processes upgrading one file at once each see the column missing; the second
    # to add it finds it there. (The race itself is too narrow to provoke in a test.)
    from costsched.sqlite_file import _add_column

    db = sqlite3.connect(tmp_path / "s.db")
    db.execute("CREATE TABLE jobs (job_id TEXT)")
    _add_column(db, "jobs", "total_steps", "INTEGER")
    _add_column(db, "jobs", "total_steps", "INTEGER")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _add_column(db, "missing", "total_steps", "INTEGER")
    db.close()
    assert _columns(tmp_path / "s.db") == ["job_id", "total_steps"]


def _columns(path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute("PRAGMA table_info(jobs)")]
    finally:
        db.close()


def test_a_file_that_is_not_a_state_file_is_a_config_error(tmp_path):
    bogus = tmp_path / "bogus.db"
    bogus.write_text("not sqlite " * 100)
    with pytest.raises(ConfigError, match="not a costsched scheduler state file"):
        JobStore(bogus)


def test_the_shipped_scheduler_yaml_loads():
    config = load_scheduler_config(REPO / "configs" / "scheduler.yaml")
    assert (config.policy, config.round_s, config.accelerator_resource) == (
        "cost-aware", 60.0, "GPU")
    assert config.state_path == "~/.costsched/scheduler.db"
    assert config.autoscaling.max_nodes == 4 and config.prices_path is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("polcy: fifo\n", "unknown key `polcy`; did you mean `policy`?"),
        ("policy: fiffo\n", "did you mean `fifo`"),
        ("round_s: 0\n", "`round_s` must be > 0"),
        ("autoscaling: {min_nodes: 3, max_nodes: 1}\n", "0 <= min_nodes <= max_nodes"),
        ("autoscaling: {max_node: 3}\n", "`autoscaling.max_node`; did you mean `max_nodes`?"),
    ],
)
def test_bad_scheduler_yaml_names_the_file_and_key(tmp_path, text, words):
    path = tmp_path / "scheduler.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scheduler_config(path)
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_unknown_autoscaling_node_type_is_refused(tmp_path):
    from costsched.config.scheduler import AutoscalingSection

    with pytest.raises(ConfigError, match="did you mean `four`"):
        harness(tmp_path, autoscaling=AutoscalingSection(node_types=("fuor",)))


def test_from_config_wires_the_state_file_policy_and_catalog(tmp_path):
    from costsched.config.scheduler import SchedulerConfig
    from costsched.scheduler.controller import SchedulerController
    from tests.test_scheduler_fakes import FakeClock, FakeCluster, FakeRunner

    path = tmp_path / "deep" / "state.db"
    clock = FakeClock()
    controller = SchedulerController.from_config(
        SchedulerConfig(policy="fifo", state_path=str(path)), cluster=FakeCluster(),
        runner=FakeRunner(clock), clock=clock)
    assert controller.policy.name == "fifo" and path.is_file()
    assert "g5.xlarge" in controller.catalog.instance_types


def test_a_retried_submit_with_the_same_request_id_returns_the_same_job(tmp_path):
    h = harness(tmp_path, node("n0"))
    first = h.controller.submit(job_text("again"), request_id="req-1")
    assert h.controller.submit(job_text("again"), request_id="req-1") == first
    other = h.controller.submit(job_text("again"), request_id="req-2")
    assert other != first
    assert [j.job_id for j in h.controller.store.jobs()] == [first, other]
    assert h.controller.submit(job_text("again")) not in (first, other)  # no id: a new job
