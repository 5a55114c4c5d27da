"""Live moves: a running job the policy keeps at its size but places elsewhere restarts
there only when it goes onto fewer nodes or onto another GPU model, and only once every
job on the nodes it leaves or goes to has stepped in its current attempt and none there
resizes; what needs the slots of a job left in place waits
(``costsched/scheduler/actions.py``)."""

from __future__ import annotations

import dataclasses

from costsched.policy.snapshot import Decision
from costsched.scheduler.actions import plan_actions
from costsched.scheduler.interfaces import NodeRecord
from tests.test_scheduler_fakes import harness, job_text, node


def _reserve(h, **free: int) -> None:
    """Set the free slots Ray reports per node (work the scheduler does not control
    holds the rest, besides its own jobs)."""
    h.cluster.node_list = [dataclasses.replace(n, free_slots=free.get(n.node_id, n.free_slots))
                           for n in h.cluster.node_list]


def test_a_job_spread_over_two_nodes_moves_onto_one_once_it_has_room(tmp_path):
    h = harness(tmp_path, node("n0", slots=2), node("n1", slots=2))
    _reserve(h, n0=1, n1=1)  # other work holds one slot of each node
    big = h.controller.submit(job_text("big", min_workers=2, max_workers=2))
    h.tick()
    assert h.job(big).placement == {"n0": 1, "n1": 1}, "no node had 2 free: it spills over"
    _reserve(h, n0=0, n1=0)  # that work and the job's own slots
    h.tick()
    assert h.job(big).placement == {"n0": 1, "n1": 1} and h.job(big).restarts == 0

    _reserve(h, n1=1)  # the other work on n1 ends: n1 has room for the job whole
    report = h.tick()
    assert [(a.kind, a.job_id, a.num_workers) for a in report.actions] == [("resize", big, 2)]
    assert h.runner.calls[-1] == ("resize", big, 2)
    job = h.job(big)
    assert (job.state, job.placement, job.restarts) == ("RESIZING", {"n1": 2}, 1)
    assert h.controller.logs(big)[-1]["detail"] == "moved onto 1 node from 2"
    _reserve(h, n1=0)
    h.tick()
    h.tick()
    assert h.job(big).state == "RUNNING" and h.job(big).restarts == 1, "it moves once"


def _running(tmp_path, *names: str):
    """Records of running 1-worker jobs ``names`` on a harness's store."""
    h = harness(tmp_path, *(node(f"n{i}", slots=2) for i in range(4)))
    ids = [h.controller.submit(job_text(name, min_workers=1, max_workers=2)) for name in names]
    h.tick()
    return [h.job(j) for j in ids]


def _plan(jobs, placements, gpu_models, stepping=None):
    """``stepping``: ids of the jobs whose attempt has stepped (None: all)."""
    rejected = []
    actions = plan_actions(jobs, {j.job_id: 1 for j in jobs},
                           Decision(placements=placements, batch_sizes={}), rejected.append,
                           gpu_models, {j.job_id for j in jobs} if stepping is None else stepping)
    assert rejected == []
    return [(a.kind, a.job_id, a.num_workers, dict(a.placement), a.detail) for a in actions]


def test_only_a_move_onto_fewer_nodes_or_another_gpu_model_is_worth_a_restart(tmp_path):
    (job,) = _running(tmp_path, "a")
    split = dataclasses.replace(job, workers=2, placement={"n0": 1, "n1": 1})
    models = {"n0": "A10G", "n1": "A10G", "n2": "A10G", "n3": "T4"}
    assert _plan([split], {job.job_id: {"n2": 2}}, models) == [
        ("resize", job.job_id, 2, {"n2": 2}, "moved onto 1 node from 2")]
    # As many nodes of the same model: it stays where it is.
    assert _plan([split], {job.job_id: {"n1": 1, "n2": 1}}, models) == []
    whole = dataclasses.replace(job, workers=2, placement={"n0": 2})
    assert _plan([whole], {job.job_id: {"n2": 2}}, models) == []
    assert _plan([whole], {job.job_id: {"n3": 2}}, models) == [
        ("resize", job.job_id, 2, {"n3": 2}, "moved onto T4 from A10G")]
    # Without the nodes' models (or onto a node whose model is not known): no model move.
    assert _plan([whole], {job.job_id: {"n3": 2}}, None) == []
    assert _plan([whole], {job.job_id: {"n9": 2}}, models) == []


def test_no_job_moves_while_one_on_its_nodes_resizes_or_has_not_stepped(tmp_path):
    a, b = _running(tmp_path, "a", "b")
    split = dataclasses.replace(a, workers=2, placement={"n0": 1, "n1": 1})
    models = dict.fromkeys(("n0", "n1", "n2", "n3"), "A10G")
    move = {a.job_id: {"n2": 2}}
    for where in ({"n2": 1}, {"n1": 1}, {"n3": 1}):  # where it goes, leaves, or neither
        other = dataclasses.replace(b, workers=1, placement=where)
        stays = {b.job_id: where}
        assert len(_plan([split, other], move | stays, models)) == 1
        blocked = [] if "n3" not in where else _plan([split, other], move | stays, models)
        resizing = dataclasses.replace(other, state="RESIZING")
        assert _plan([split, resizing], move | stays, models) == blocked
        # Nor while a job there has not stepped in its current attempt: its workers may
        # not hold their slots yet, and Ray would report those as free.
        assert _plan([split, other], move | stays, models, {a.job_id}) == blocked
    assert _plan([dataclasses.replace(split, state="RESIZING")], move, models) == []
    assert _plan([split], move, models, set()) == []


def test_the_controller_moves_a_job_kept_at_its_size_onto_another_gpu_model(tmp_path):
    """The controller's plan, with the GPU models of the nodes it has seen."""
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=2,
                    free_slots=2, usd_per_hour=3.2)
    h = harness(tmp_path, node("n0", slots=2), t4)
    job = h.controller.submit(job_text("wide", min_workers=2, max_workers=2))
    h.tick()
    held = next(iter(h.job(job).placement))
    other = "t4-0" if held == "n0" else "n0"
    decision = Decision(placements={job: {other: 2}}, batch_sizes={})
    assert h.controller.plan(decision) == [], "started, not yet polled: it stays"
    h.tick()  # polled: its attempt has stepped
    actions = h.controller.plan(decision)
    assert [(a.kind, dict(a.placement)) for a in actions] == [("resize", {other: 2})]
    assert actions[0].detail.startswith("moved onto ")


def test_nothing_starts_on_the_slots_of_a_job_left_in_place(tmp_path):
    """The decision moves J onto one node and gives its old slot to K, but J may not
    move yet (M, beside it, has not stepped): K waits rather than start on a slot J
    still holds."""
    j, m, k = _running(tmp_path, "j", "m", "k")
    j = dataclasses.replace(j, workers=2, placement={"n0": 1, "n1": 1})
    m = dataclasses.replace(m, workers=1, placement={"n0": 1})
    k = dataclasses.replace(k, state="QUEUED", workers=0, placement={})
    models = dict.fromkeys(("n0", "n1", "n2", "n3"), "A10G")
    decision = {j.job_id: {"n3": 2}, m.job_id: {"n0": 1}, k.job_id: {"n0": 1}}
    assert _plan([j, m, k], decision, models) == [
        ("resize", j.job_id, 2, {"n3": 2}, "moved onto 1 node from 2"),
        ("resume", k.job_id, 1, {"n0": 1}, "0 -> 1 workers")]
    def waiting(jobs, placements, stepping):
        """The actions planned (none expected) and the jobs told to wait, by node."""
        rejected = []
        actions = plan_actions(jobs, {x.job_id: 1 for x in jobs},
                               Decision(placements=placements, batch_sizes={}),
                               rejected.append, models, stepping)
        return actions, [line.split(":")[0] + " @" + line.split("node ")[1].split()[0]
                         for line in rejected]

    assert waiting([j, m, k], decision, {j.job_id}) == ([], [f"job {k.job_id} @n0"])
    # J itself has not stepped: a job the decision resizes onto its slots waits too, and
    # so does the one that would have taken the slots that job gives up.
    m = dataclasses.replace(m, placement={"n2": 1})
    decision = {j.job_id: {"n1": 2}, m.job_id: {"n0": 1, "n3": 1}, k.job_id: {"n2": 1}}
    assert waiting([j, m, k], decision, {m.job_id, k.job_id}) == (
        [], [f"job {m.job_id} @n0", f"job {k.job_id} @n2"])
