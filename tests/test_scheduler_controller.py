"""The live scheduler's controller on fakes: start, preempt, resume, budget, node loss, crash."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.scheduler.interfaces import JobProgress, NodeRecord
from tests.test_scheduler_fakes import (
    FakeClock,
    FakeCluster,
    FakeRunner,
    harness,
    job_text,
    make_controller,
    node,
)


def test_a_submitted_job_starts_on_the_next_tick(tmp_path):
    h = harness(tmp_path, node("n0", slots=2))
    job_id = h.controller.submit(job_text("mnist", min_workers=1, max_workers=2))
    assert job_id == "mnist-1"
    assert h.state(job_id) == "QUEUED"
    report = h.tick()
    assert [(a.kind, a.job_id, a.num_workers) for a in report.actions] == [
        ("start", job_id, 2)]
    assert h.runner.calls == [("start", job_id, 2)]
    job = h.job(job_id)
    assert (job.state, job.workers, job.placement, job.run_id) == (
        "RUNNING", 2, {"n0": 2}, "run-mnist-1")
    assert [e["kind"] for e in h.controller.logs(job_id)] == ["submitted", "started"]


def test_on_nodes_of_two_gpu_models_a_job_never_spans_both(tmp_path):
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=2,
                    free_slots=2, usd_per_hour=3.2)
    h = harness(tmp_path, node("n0", slots=2), t4)  # n0: A10G
    wide = h.controller.submit(job_text("wide", min_workers=1, max_workers=4))
    h.tick()
    assert h.job(wide).workers == 2 and len(h.job(wide).placement) == 1
    other = h.controller.submit(job_text("other", min_workers=1, max_workers=4))
    h.tick()  # the second job gets the other model's node, whole
    placements = [h.job(j).placement for j in (wide, other)]
    assert sorted(n for p in placements for n in p) == ["n0", "t4-0"]
    assert all(len(p) == 1 and sum(p.values()) == 2 for p in placements)


def test_high_priority_arrival_preempts_the_lowest_which_resumes_later(tmp_path):
    h = harness(tmp_path, node("n0", slots=2))
    low = h.controller.submit(job_text("low", priority=0))
    mid = h.controller.submit(job_text("mid", priority=1))
    h.tick()
    assert (h.state(low), h.state(mid)) == ("RUNNING", "RUNNING")

    high = h.controller.submit(job_text("high", priority=2))
    report = h.tick()
    assert [(a.kind, a.job_id) for a in report.actions] == [("preempt", low), ("start", high)]
    assert h.runner.kinds(low) == ["start", "stop:preempted"]
    assert (h.state(low), h.state(mid), h.state(high)) == ("PREEMPTED", "RUNNING", "RUNNING")
    assert h.job(low).preemptions == 1 and h.job(low).workers == 0
    h.tick()
    assert h.state(low) == "PREEMPTED", "no room yet: it must wait"

    h.runner.script[high] = JobProgress(state="finished", outcome="TARGET_REACHED")
    report = h.tick()
    assert [(a.kind, a.job_id) for a in report.actions] == [("finish", high), ("resume", low)]
    assert h.state(high) == "TARGET_REACHED"
    assert h.runner.kinds(low) == ["start", "stop:preempted", "start"]
    resumed = h.job(low)
    assert (resumed.state, resumed.restarts, resumed.preemptions) == ("RUNNING", 1, 1)
    assert [e["kind"] for e in h.controller.logs(low)] == [
        "submitted", "started", "preempted", "resumed"]


def test_an_elastic_job_is_resized_when_room_appears(tmp_path):
    h = harness(tmp_path, node("n0", slots=2), node("n1", slots=2))
    big = h.controller.submit(job_text("big", min_workers=1, max_workers=4))
    other = h.controller.submit(job_text("other", min_workers=2, max_workers=2, priority=1))
    h.tick()
    assert (h.job(big).workers, h.job(other).workers) == (2, 2)
    h.runner.script[other] = JobProgress(state="finished", outcome="COMPLETED")
    report = h.tick()
    assert ("resize", big, 4) in [(a.kind, a.job_id, a.num_workers) for a in report.actions]
    assert h.runner.calls[-1] == ("resize", big, 4)
    assert (h.state(big), h.job(big).workers, h.job(big).restarts) == ("RESIZING", 4, 1)
    h.tick()
    assert h.state(big) == "RUNNING"


@pytest.mark.parametrize("budget_usd", [0.05, 0.1, 0.33])
def test_a_job_stops_at_budget_exhausted_before_crossing_its_budget(tmp_path, budget_usd):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("capped", budget_usd=budget_usd))
    h.tick()
    for _ in range(100):
        report = h.tick()
        if h.state(job_id) != "RUNNING":
            break
    assert h.state(job_id) == "BUDGET_EXHAUSTED"
    assert ("stop_budget", job_id) in [(a.kind, a.job_id) for a in report.actions]
    assert h.runner.kinds(job_id)[-1] == "stop:budget"
    spent_by_runner = h.runner.spent[job_id]
    assert 0.5 * budget_usd < spent_by_runner <= budget_usd
    assert "stopped before its budget" in h.controller.logs(job_id)[-1]["detail"]


@pytest.mark.parametrize("budget_usd", [0.05, 0.1])
def test_a_spot_job_run_on_dearer_on_demand_nodes_still_stops_before_its_budget(
        tmp_path, budget_usd):
    """Declared spot ($0.25 a GPU-hour), billed on-demand ($0.80) where it was placed:
    the budget stop projects at the rate the runner bills, not the declared one."""
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("spot", budget_usd=budget_usd, spot=True))
    h.tick()
    for _ in range(100):
        h.tick()
        if h.state(job_id) != "RUNNING":
            break
    assert h.state(job_id) == "BUDGET_EXHAUSTED"
    assert 0.5 * budget_usd < h.runner.spent[job_id] <= budget_usd


def test_a_job_that_cannot_afford_one_round_is_never_started(tmp_path):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("broke", budget_usd=0.001))
    h.tick()
    assert h.state(job_id) == "BUDGET_EXHAUSTED"
    assert h.runner.calls == []


@pytest.mark.parametrize(
    ("progress", "spot_restarts", "failures"),
    [
        (JobProgress(state="failed", node_lost=True, message="spot reclaim"), 1, 0),
        (JobProgress(state="lost", node_lost=True), 1, 0),
        (JobProgress(state="failed", message="CUDA error"), 0, 1),
        (JobProgress(state="lost"), 0, 0),
    ],
)
def test_a_lost_run_restarts_from_its_checkpoint_on_the_surviving_node(
        tmp_path, progress, spot_restarts, failures):
    h = harness(tmp_path, node("n0"), node("n1"))
    job_id = h.controller.submit(job_text("victim"))
    h.tick()
    held = next(iter(h.job(job_id).placement))
    h.cluster.kill(held)
    h.runner.script[job_id] = progress
    report = h.tick()
    assert [a.kind for a in report.actions] == ["requeue", "resume"]
    job = h.job(job_id)
    assert (job.state, job.spot_restarts, job.failures, job.restarts) == (
        "RUNNING", spot_restarts, failures, 1)
    assert set(job.placement) == {"n0", "n1"} - {held}
    assert h.runner.kinds(job_id) == ["start", "start"]


def test_a_run_still_polling_as_running_on_a_dead_node_is_moved(tmp_path):
    # Ray Train keeps retrying a worker group whose node died, so the run looks alive;
    # the controller must notice from the placement that its node is gone.
    h = harness(tmp_path, node("n0"), node("n1"))
    job_id = h.controller.submit(job_text("victim"))
    h.tick()
    held = next(iter(h.job(job_id).placement))
    h.cluster.kill(held)
    report = h.tick()
    assert [a.kind for a in report.actions] == ["requeue", "resume"]
    job = h.job(job_id)
    assert (job.state, job.spot_restarts, job.failures) == ("RUNNING", 1, 0)
    assert set(job.placement) == {"n0", "n1"} - {held}
    assert h.runner.kinds(job_id) == ["start", "stop:node_lost", "start"]
    assert "gone" in h.controller.logs(job_id)[-2]["detail"]


@pytest.mark.parametrize(("max_failures", "final"),
                         [(0, "FAILED"), (1, "RUNNING"), (-1, "RUNNING")])
def test_own_failures_use_up_max_failures_but_node_losses_do_not(tmp_path, max_failures, final):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("flaky", max_failures=max_failures))
    h.tick()
    for _ in range(3):  # node losses never count
        h.runner.script[job_id] = JobProgress(state="failed", node_lost=True)
        h.tick()
    assert (h.state(job_id), h.job(job_id).spot_restarts) == ("RUNNING", 3)
    h.runner.script[job_id] = JobProgress(state="failed", message="NaN loss")
    h.tick()
    assert h.state(job_id) == final
    assert h.job(job_id).failures == 1


def test_a_restarted_controller_readopts_live_runs_and_restarts_dead_ones(tmp_path):
    h = harness(tmp_path, node("n0"), node("n1"))
    alive = h.controller.submit(job_text("alive", priority=1))
    dead = h.controller.submit(job_text("dead", priority=1))
    waiting = h.controller.submit(job_text("waiting"))
    h.tick()
    assert [h.state(j) for j in (alive, dead, waiting)] == ["RUNNING", "RUNNING", "QUEUED"]

    # The controller process dies; its successor sees the same file, a runner that
    # still has `alive`'s run but lost `dead`'s.
    runner = FakeRunner(h.clock)
    runner.runs[alive] = dict(h.runner.runs[alive])
    runner.spent[alive] = 0.0
    clock = FakeClock(h.clock.t)
    successor = make_controller(h.path, clock, FakeCluster(node("n0"), node("n1")), runner)
    clock.advance(60)
    report = successor.tick()
    rows = successor.status()
    assert [r.job_id for r in rows] == [alive, dead, waiting], "none lost, none duplicated"
    assert [r.state for r in rows] == ["RUNNING", "RUNNING", "QUEUED"]
    assert runner.kinds(alive) == [], "a live run is adopted, not started again"
    assert runner.kinds(dead) == ["start"], "a dead run restarts from its checkpoint"
    assert ("requeue", dead) in [(a.kind, a.job_id) for a in report.actions]
    assert successor.store.get(dead).restarts == 1
    assert "adopted" in [e["kind"] for e in successor.logs(alive)]
    assert successor.submit(job_text("next")) == "next-4", "ids keep counting"


def test_cancel_stops_a_running_job_and_dequeues_a_waiting_one(tmp_path):
    h = harness(tmp_path, node("n0"))
    running = h.controller.submit(job_text("running", priority=1))
    waiting = h.controller.submit(job_text("waiting"))
    h.tick()
    h.controller.cancel(running)
    h.controller.cancel(waiting)
    assert (h.state(running), h.state(waiting)) == ("CANCELLED", "CANCELLED")
    assert h.runner.kinds(running) == ["start", "stop:cancelled"]
    assert h.runner.kinds(waiting) == []
    assert h.tick().actions == ()


def test_a_runner_that_cannot_start_a_job_leaves_it_queued_for_the_next_round(tmp_path):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("unlucky"))
    real_start = h.runner.start

    def refuse(*args):
        raise RuntimeError("placement group timed out")

    h.runner.start = refuse
    report = h.tick()
    assert report.actions == ()
    job = h.job(job_id)
    assert (job.state, job.workers, job.started_at, job.restarts) == ("QUEUED", 0, None, 0)
    assert "start failed: placement group timed out" in h.controller.logs(job_id)[-1]["detail"]
    h.runner.start = real_start
    assert [a.kind for a in h.tick().actions] == ["start"]
    assert h.state(job_id) == "RUNNING"


def test_an_unreachable_cluster_skips_the_decision_but_keeps_polling(tmp_path):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("steady"))
    h.tick()

    def down():
        raise ConnectionError("GCS unreachable")

    h.cluster.nodes = down
    h.runner.script[job_id] = JobProgress(state="finished", outcome="COMPLETED")
    report = h.tick()
    assert [a.kind for a in report.actions] == ["finish"]
    assert h.state(job_id) == "COMPLETED"


def test_a_job_that_holds_slots_but_takes_no_step_is_killed_and_requeued(tmp_path):
    h = harness(tmp_path, node("n0"), stall_restart_minutes=5.0)
    job_id = h.controller.submit(job_text("stuck"))
    h.tick()
    assert h.state(job_id) == "RUNNING"
    for _ in range(5):  # alive, but no step: polls say running at step 0
        h.runner.script[job_id] = JobProgress(state="running", last_step=0, spent_usd=0.01)
        h.tick()
    assert h.job(job_id).failures == 0  # 5 minutes without a step: not yet
    h.runner.script[job_id] = JobProgress(state="running", last_step=0, spent_usd=0.01)
    h.tick()
    job = h.job(job_id)
    assert "stop:stalled" in h.runner.kinds(job_id)
    assert job.failures == 1 and "stalled: no step for 6 min" in job.message
    assert job.state in ("QUEUED", "RUNNING")  # requeued, and started again at once
    assert h.runner.kinds(job_id).count("start") == 2


def test_a_job_resumed_after_a_long_wait_is_not_killed_as_stalled_before_its_first_step(
        tmp_path):
    """The stall clock starts again with each start: a job that waited longer than the
    stall limit while preempted has not stalled the moment it resumes."""
    h = harness(tmp_path, node("n0"), stall_restart_minutes=5.0)
    low = h.controller.submit(job_text("low", priority=0))
    h.tick()
    h.runner.script[low] = JobProgress(state="running", last_step=50, last_step_at=h.clock.now())
    h.tick()
    high = h.controller.submit(job_text("high", priority=5))
    h.tick()
    assert h.state(low) == "PREEMPTED"
    for _ in range(10):  # ten minutes behind the other job
        h.runner.script[high] = JobProgress(state="running", last_step=1,
                                            last_step_at=h.clock.now())
        h.tick()
    h.runner.script[high] = JobProgress(state="finished", outcome="COMPLETED")
    h.tick()
    assert h.state(low) == "RUNNING"
    for _ in range(3):  # starting again: no step of this attempt yet, no step time
        h.runner.script[low] = JobProgress(state="running", last_step=50)
        h.tick()
    job = h.job(low)
    assert job.failures == 0 and "stop:stalled" not in h.runner.kinds(low), job.message
    assert h.runner.kinds(low).count("start") == 2


def test_a_cancel_returns_at_once_and_its_final_charge_lands_when_the_stop_ends(tmp_path):
    """Stops never block the controller: the runner finishes them in a later round, and
    the job's recorded spend becomes what its stop finally cost."""
    h = harness(tmp_path, node("n0", slots=2))
    job_id = h.controller.submit(job_text("mnist", min_workers=1, max_workers=2))
    h.tick()
    finished: list[tuple[str, float]] = []
    h.runner.advance = lambda: [finished.pop()] if finished else []
    h.controller.cancel(job_id)
    assert h.state(job_id) == "CANCELLED"
    spent_at_cancel = h.job(job_id).spent_usd
    finished.append((job_id, spent_at_cancel + 0.25))  # the stop took a while, charged
    h.tick()
    assert h.job(job_id).spent_usd == pytest.approx(spent_at_cancel + 0.25)
    assert h.state(job_id) == "CANCELLED"


def test_the_budget_reserve_is_the_jobs_measured_stop_latency(tmp_path):
    from costsched.goodput.restart import stop_reserve_s

    assert stop_reserve_s([], prior=5.0) == 5.0  # nothing measured: the prior
    assert stop_reserve_s([{"stop": 0.0, "scheduling": 3.0}], prior=5.0) == 5.0
    assert stop_reserve_s([{"stop": 4.0}, {"stop": 20.0}, {"stop": 6.0}],
                          prior=5.0) == pytest.approx(30.0)  # 1.5 x the slowest


def test_jobs_on_a_node_with_a_reclaim_notice_stop_at_a_checkpoint_and_move(tmp_path):
    h = harness(tmp_path, node("n0"), node("n1"))
    job_id = h.controller.submit(job_text("victim", spot=True))
    h.tick()
    held = next(iter(h.job(job_id).placement))
    other = ({"n0", "n1"} - {held}).pop()
    h.cluster.node_list = [dataclasses.replace(n, reclaim_notice=n.node_id == held)
                           for n in h.cluster.node_list]
    report = h.tick()
    assert [a.kind for a in report.actions] == ["requeue", "resume"]
    job = h.job(job_id)
    assert (job.state, job.spot_restarts, job.failures) == ("RUNNING", 1, 0)
    assert set(job.placement) == {other}
    # Asked to stop at a checkpoint (a graceful stop), not as a node already gone.
    assert h.runner.kinds(job_id) == ["start", "stop:spot_notice", "start"]
    assert h.controller.logs(job_id)[-2]["detail"].startswith("spot notice: node ")
    # The noticed node gets no work while it is still there.
    second = h.controller.submit(job_text("second", spot=True))
    h.tick()
    assert (h.state(second), h.job(job_id).placement) == ("QUEUED", {other: 1})
