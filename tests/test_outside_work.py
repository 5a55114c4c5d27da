"""Other work on the nodes, as the live policy is told it: while a job's attempt has not
stepped, Ray still reports its slots free, and the slots other work holds on that node
must not look free with them (``costsched/scheduler/outside_work.py``)."""

from __future__ import annotations

import dataclasses

from costsched.policy.snapshot import ClusterSnapshot, NodeView
from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.outside_work import OutsideWork
from tests.test_scheduler_fakes import harness, job_text, make_controller, node


def _free(work: OutsideWork, reserved: int, placements: dict) -> int:
    """GPUs the policy may hand out on a 2-GPU node Ray reports ``reserved`` of."""
    nodes = (NodeView(node_id="n0", gpu_model="A10G", num_gpus=2, usd_per_hour=2.0,
                      reserved_gpus=reserved),)
    snapshot = ClusterSnapshot(time_s=0.0, round_index=0, jobs=(),
                               nodes=work.nodes(nodes, placements), placements=placements)
    return snapshot.free_gpus()["n0"]


def test_other_work_is_held_as_last_seen_until_the_job_beside_it_steps():
    work = OutsideWork()
    started = JobProgress(state="running")  # polled before its first step
    stepped = JobProgress(state="running", last_step=5, attempt_at=100.0)
    assert _free(work, 1, {}) == 1, "other work holds one slot"
    work.polled("a", started, started_at=100.0)
    # a's worker has not taken its slot: Ray reports 1 reserved (the other work's). The
    # policy hands out both: a's own, and none other.
    assert _free(work, 1, {"a": {"n0": 1}}) == 1
    assert _free(OutsideWork(), 1, {"a": {"n0": 1}}) == 2, "unguarded: 2 look free"
    work.polled("a", stepped, started_at=100.0)
    assert _free(work, 2, {"a": {"n0": 1}}) == 1
    assert work.stepping() == {"a"}
    # The other work ends: once the job there steps, its slot is free again.
    work.polled("a", stepped, started_at=100.0)
    assert _free(work, 1, {"a": {"n0": 1}}) == 2
    # A new attempt (a resize at 200 s) that has not stepped: as last seen again.
    work.polled("a", stepped, started_at=200.0)
    assert _free(work, 0, {"a": {"n0": 2}}) == 2
    assert work.stepping() == set()
    # Stepped once, then not polled this round (its poll failed): not counted stepping.
    work.polled("a", dataclasses.replace(stepped, attempt_at=201.0), started_at=200.0)
    assert _free(work, 2, {"a": {"n0": 2}}) == 2 and work.stepping() == {"a"}
    assert _free(work, 1, {"a": {"n0": 2}}) == 2 and work.stepping() == set()


def test_a_job_is_not_started_on_slots_other_work_holds_beside_a_starting_job(tmp_path):
    h = harness(tmp_path, node("n0", slots=2))
    h.cluster.node_list = [dataclasses.replace(h.cluster.node_list[0], free_slots=1)]
    a = h.controller.submit(job_text("a"))
    h.tick()
    assert h.job(a).placement == {"n0": 1}
    b = h.controller.submit(job_text("b"))
    # a's workers have not taken their slot yet: Ray still reports one free, and a has
    # not stepped.
    h.runner.script[a] = JobProgress(state="running")
    h.tick()
    assert (h.state(a), h.state(b)) == ("RUNNING", "QUEUED"), h.controller.logs(b)
    h.cluster.node_list = [dataclasses.replace(h.cluster.node_list[0], free_slots=0)]
    h.tick()
    assert h.state(b) == "QUEUED", "a stepped: the node is full"


def test_a_restarted_scheduler_holds_the_other_work_it_last_saw(tmp_path):
    h = harness(tmp_path, node("n0", slots=3))
    free = [dataclasses.replace(h.cluster.node_list[0], free_slots=n) for n in range(3)]
    h.cluster.node_list = [free[2]]  # other work holds one slot
    a = h.controller.submit(job_text("a"))
    h.tick()
    h.cluster.node_list = [free[1]]  # a's worker holds its slot; a steps
    h.tick()
    b = h.controller.submit(job_text("b"))
    h.runner.script[b] = JobProgress(state="running")  # b's worker never takes its slot
    h.tick()
    assert (h.state(a), h.state(b)) == ("RUNNING", "RUNNING")
    # The scheduler restarts while b has not stepped: Ray still reports b's slot free.
    successor = make_controller(h.path, h.clock, h.cluster, h.runner)
    c = successor.submit(job_text("c"))
    h.clock.advance(60.0)
    successor.tick()
    assert successor.store.get(c).state == "QUEUED", successor.logs(c)
    assert successor.store.get(b).state == "RUNNING"
