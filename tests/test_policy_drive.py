"""drive(policy, snapshot): the same decision check and job-view rules for the simulator
and the live controller; what the live path cannot execute is cut and said."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import yaml

from costsched.policy.drive import Executes, drive, gpu_range
from costsched.policy.goodput import best_goodput
from costsched.policy.snapshot import Decision, NodeView
from costsched.policy.validate import InvalidDecision
from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.job_models import Measurement
from costsched.scheduler.policy_view import job_view
from tests.support.policy_fakes import job, nodes, snapshot
from tests.test_scheduler_fakes import QUICKSTART, harness, job_text, node

LIVE = Executes(batch_sizes=False, node_changes=False)


class Scripted:
    """A policy that returns a fixed decision."""

    name = "scripted"

    def __init__(self, decision: Decision):
        self.decision = decision

    def decide(self, snapshot):
        return self.decision


def two_jobs_on_one_node():
    return snapshot([job("a", max_gpus=4, requested_batch_size=32),
                     job("b", max_gpus=4, requested_batch_size=64)], nodes(1, gpus=4))


def test_a_full_executor_gets_the_decision_unchanged():
    decision = Decision(placements={"a": {"n0": 2}, "b": {"n0": 2}},
                        batch_sizes={"a": 128, "b": 64})
    driven = drive(Scripted(decision), two_jobs_on_one_node(), elastic=True)
    assert driven.decision == decision
    assert driven.rejected == ()


def test_the_live_executor_keeps_requested_batches_and_says_which_it_dropped():
    decision = Decision(placements={"a": {"n0": 2}, "b": {"n0": 2}},
                        batch_sizes={"a": 128, "b": 64})
    driven = drive(Scripted(decision), two_jobs_on_one_node(), elastic=True, executes=LIVE)
    assert driven.decision.batch_sizes == {"a": 32, "b": 64}
    assert driven.decision.placements == decision.placements
    assert driven.rejected == ("job a: batch size 128 not applied (the job's batch 32 is "
                               "fixed; `training.adaptive_batch: true` lets the policy "
                               "choose it)",)


def test_the_live_executor_applies_the_batch_of_jobs_that_opted_in_only():
    decision = Decision(placements={"a": {"n0": 2}, "b": {"n0": 2}},
                        batch_sizes={"a": 128, "b": 256})
    driven = drive(Scripted(decision), two_jobs_on_one_node(), elastic=True,
                   executes=Executes(batch_sizes=frozenset({"b"}), node_changes=False))
    assert driven.decision.batch_sizes == {"a": 32, "b": 256}
    assert [line.split(":")[0] for line in driven.rejected] == ["job a"]


def test_nodes_the_live_executor_cannot_add_take_their_jobs_with_them():
    extra = NodeView(node_id="new", gpu_model="T4", num_gpus=4, usd_per_hour=4.0)
    decision = Decision(placements={"a": {"n0": 4}, "b": {"new": 4}}, batch_sizes={},
                        nodes_to_add=(extra,))
    driven = drive(Scripted(decision), two_jobs_on_one_node(), elastic=True, executes=LIVE)
    assert driven.decision.nodes_to_add == ()
    assert driven.decision.placements == {"a": {"n0": 4}}
    assert any("node new (T4) not added" in line for line in driven.rejected)
    assert any(line.startswith("job b: not placed") for line in driven.rejected)


@pytest.mark.parametrize("executes", [Executes(), LIVE])
def test_an_over_allocating_decision_is_refused_by_every_driver(executes):
    decision = Decision(placements={"a": {"n0": 3}, "b": {"n0": 2}}, batch_sizes={})
    with pytest.raises(InvalidDecision, match="over-allocated"):
        drive(Scripted(decision), two_jobs_on_one_node(), elastic=True, executes=executes)


def test_a_fixed_size_policy_must_stay_between_the_min_and_the_requested_size():
    snap = snapshot([job("a", min_gpus=1, max_gpus=4, requested_gpus=2)], nodes(1, gpus=4))
    with pytest.raises(InvalidDecision, match=r"outside \[1, 2\]"):
        drive(Scripted(Decision(placements={"a": {"n0": 3}}, batch_sizes={})), snap,
              elastic=False)
    rigid = snapshot([job("a", min_gpus=2, max_gpus=2, requested_gpus=2)], nodes(1, gpus=4))
    with pytest.raises(InvalidDecision, match=r"outside \[2, 2\]"):
        drive(Scripted(Decision(placements={"a": {"n0": 1}}, batch_sizes={})), rigid,
              elastic=False)


def test_simulated_views_are_rigid_under_fixed_sizes_and_live_views_keep_their_range(
        tmp_path):
    assert gpu_range(elastic=False, elastic_range=(1, 8), requested_gpus=3) == (3, 3)
    assert gpu_range(elastic=True, elastic_range=(1, 8), requested_gpus=3) == (1, 8)
    h = harness(tmp_path, node("n0", slots=4))
    record = h.job(h.controller.submit(job_text("j", min_workers=1, max_workers=3)))
    config = h.controller._config(record)
    rate = h.controller.job_rate(record)
    for elastic in (True, False):
        view = job_view(record, config, 0.05, rate, elastic=elastic)
        assert (view.min_gpus, view.max_gpus, view.requested_gpus) == (1, 3, 3)


def test_a_live_job_tells_the_policy_its_work_left_from_the_time_its_run_reported(tmp_path):
    # Before any measurement the view scales linearly with a 5% sync penalty per extra
    # GPU: 2 workers run k / (1 + 0.05 (k - 1)) = 2 / 1.05 times one. A run that said it
    # needs 1000 s more on 2 workers has 1000 x 2 / 1.05 s of one-GPU work left.
    h = harness(tmp_path, node("n0", slots=4))
    record = h.job(h.controller.submit(job_text("j", min_workers=1, max_workers=3)))
    config, rate = h.controller._config(record), h.controller.job_rate(record)
    running = dataclasses.replace(record, eta_s=1000.0, workers=2, placement={"n0": 2})
    view = job_view(running, config, 0.05, rate, elastic=True)
    one_gpu = best_goodput(view, 1, 4).goodput
    assert view.remaining_work / one_gpu == pytest.approx(1000.0 * 2 / 1.05)
    for unknown in (record, dataclasses.replace(running, eta_s=None),
                    dataclasses.replace(running, workers=0, placement={})):
        assert job_view(unknown, config, 0.05, rate, elastic=True).remaining_work is None


def _report(h, job_id: str, *, last_step: int, total_steps: int | None,
            eta_s: float | None) -> None:
    """The job's run reports, with a measurement of its steps, and a round polls it."""
    record = h.job(job_id)
    h.runner.script[job_id] = JobProgress(
        state="running", spent_usd=record.spent_usd, last_step=last_step,
        total_steps=total_steps, last_step_at=h.clock.now(), usd_per_hour=record.usd_per_hour,
        eta_s=eta_s, measurement=Measurement(
            num_workers=2, num_nodes=1, local_bsz=64, accum_steps=1, step_time_s=0.5,
            sync_time_s=0.02, samples_per_s=256.0, grad_sqr=0.5, grad_var=32.0))
    h.tick()


def test_a_measured_job_keeps_its_work_left_in_steps_while_it_waits_or_restarts(tmp_path):
    # Its run reports step 100 of 400. A fixed-batch job's goodput is steps per second,
    # so 300 steps are left: the same while it runs, once it waits (no workers) and on a
    # new attempt that has reported no steps yet (no eta, no totals), so its weight does
    # not fall back to its service at every resize. Without a fitted model (steps not
    # measured) the view's step time is notional, and the work left is known only from
    # a running eta.
    h = harness(tmp_path, node("n0", slots=4))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=2))
    h.tick()
    _report(h, job_id, last_step=100, total_steps=400, eta_s=50.0)
    assert (h.job(job_id).last_step, h.job(job_id).total_steps) == (100, 400)
    _report(h, job_id, last_step=0, total_steps=None, eta_s=None)  # a new attempt
    record = h.job(job_id)
    assert (record.last_step, record.total_steps, record.eta_s) == (100, 400, None)
    (row,) = h.controller.status()  # and `costsched status` shows them
    assert (row.last_step, row.total_steps) == (100, 400)
    config, rate = h.controller._config(record), h.controller.job_rate(record)
    model = h.controller.job_models.model(job_id)
    assert model is not None
    for moment in (record, dataclasses.replace(record, workers=0, placement={}),
                   dataclasses.replace(record, eta_s=50.0)):
        view = job_view(moment, config, 0.05, rate, elastic=True, model=model)
        assert view.remaining_work == 300.0
    unmeasured = job_view(dataclasses.replace(record, workers=0, placement={}), config, 0.05,
                          rate, elastic=True)
    assert unmeasured.remaining_work is None
    h.runner.script[job_id] = JobProgress(state="finished", outcome="COMPLETED",
                                          spent_usd=record.spent_usd, last_step=400)
    h.tick()  # its last step is kept: status shows 400/400, not the last poll's 100
    assert (h.state(job_id), h.job(job_id).last_step) == ("COMPLETED", 400)


def test_after_a_restore_from_an_older_checkpoint_the_lost_steps_are_left_again(tmp_path):
    # Step 100 of 400, then its node goes and it resumes from its checkpoint at step 90:
    # the run reports 92, so 308 steps are left (not 300). A run that does not report its
    # total steps (a custom entrypoint) is taken at the larger step, as before.
    h = harness(tmp_path, node("n0", slots=4))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=2))
    h.tick()
    _report(h, job_id, last_step=100, total_steps=400, eta_s=50.0)
    _report(h, job_id, last_step=92, total_steps=400, eta_s=52.0)
    record = h.job(job_id)
    assert (record.last_step, record.total_steps) == (92, 400)
    model = h.controller.job_models.model(job_id)
    view = job_view(record, h.controller._config(record), 0.05, h.controller.job_rate(record),
                    elastic=True, model=model)
    assert view.remaining_work == 308.0
    _report(h, job_id, last_step=80, total_steps=None, eta_s=None)
    assert h.job(job_id).last_step == 92


def test_an_adaptive_batch_job_tells_its_work_left_only_from_its_running_eta(tmp_path):
    # Its steps are at a batch that changes, so its total steps are not steps at its
    # first batch: a waiting adaptive job is weighed by service, a running one by eta.
    training = dict(yaml.safe_load(QUICKSTART.read_text())["training"], adaptive_batch=True)
    h = harness(tmp_path, node("n0", slots=4))
    job_id = h.controller.submit(job_text("a", min_workers=1, max_workers=2,
                                          training=training))
    h.tick()
    _report(h, job_id, last_step=100, total_steps=400, eta_s=None)
    record = h.job(job_id)
    config, rate = h.controller._config(record), h.controller.job_rate(record)
    model = h.controller.job_models.model(job_id)
    assert record.total_steps == 400 and model is not None
    waiting = dataclasses.replace(record, workers=0, placement={})
    assert job_view(waiting, config, 0.05, rate, elastic=True, model=model).remaining_work \
        is None
    running = dataclasses.replace(record, eta_s=50.0)
    view = job_view(running, config, 0.05, rate, elastic=True, model=model)
    per_node = max(running.placement.values())
    assert view.remaining_work == pytest.approx(
        50.0 * best_goodput(view, running.workers, per_node).goodput)


@pytest.mark.parametrize("nearer", ["a", "b", "c"])
def test_the_live_controller_gives_the_spare_gpu_to_the_job_nearest_its_end(tmp_path, nearer):
    # Three like jobs of 1-2 workers share a 4-GPU node: one gets the fourth GPU. Once
    # their runs report how long they still need, it goes to the one that ends in ten
    # minutes, not to those that need ten hours, whichever it is.
    h = harness(tmp_path, node("n0", slots=4))
    ids = {name: h.controller.submit(job_text(name, min_workers=1, max_workers=2))
           for name in ("a", "b", "c")}
    h.tick()
    for _ in range(3):
        for name, job_id in ids.items():
            record = h.job(job_id)
            h.runner.script[job_id] = JobProgress(
                state="running", spent_usd=record.spent_usd, last_step=record.last_step + 1,
                last_step_at=h.clock.now() + 60.0, usd_per_hour=record.usd_per_hour,
                eta_s=600.0 if name == nearer else 36_000.0)
        h.tick()
    workers = {name: h.job(job_id).workers for name, job_id in ids.items()}
    assert workers == {name: 2 if name == nearer else 1 for name in ids}, workers


def test_the_controller_logs_what_it_does_not_execute_once(tmp_path, caplog):
    h = harness(tmp_path, node("n0", slots=2))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=2))
    h.controller.policy = Scripted(Decision(placements={job_id: {"n0": 2}},
                                            batch_sizes={job_id: 4096}))
    with caplog.at_level(logging.WARNING, logger="costsched.scheduler.controller"):
        h.tick()
        h.tick()
    assert h.job(job_id).workers == 2
    lines = [r.getMessage() for r in caplog.records if "not executed" in r.getMessage()]
    assert len(lines) == 1 and "batch size 4096 not applied" in lines[0]


def test_an_invalid_live_decision_changes_nothing_and_is_logged(tmp_path, caplog):
    h = harness(tmp_path, node("n0", slots=2))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=2))
    h.tick()
    assert h.job(job_id).workers == 2
    h.controller.policy = Scripted(Decision(placements={job_id: {"n0": 3}}, batch_sizes={}))
    with caplog.at_level(logging.ERROR, logger="costsched.scheduler.controller"):
        report = h.tick()
    assert h.job(job_id).workers == 2 and h.state(job_id) == "RUNNING"
    assert [a for a in report.actions if a.kind in ("preempt", "resize")] == []
    assert any("invalid decision" in r.getMessage() for r in caplog.records)
