"""Autoscaling requests, alerts and status rows of the live scheduler."""

from __future__ import annotations

import dataclasses

import pytest

from costsched.config.scheduler import AutoscalingSection
from costsched.scheduler import policy_view as models
from costsched.scheduler.alerts import job_alerts
from costsched.scheduler.interfaces import JobProgress
from tests.test_scheduler_fakes import CATALOG, harness, job_text, node


@pytest.mark.parametrize(
    ("gpus_per_worker", "spot", "allowed", "expected"),
    [
        (1, False, (), "four"),       # $0.80 per GPU-hour beats $1.00 and $1.25
        (1, True, (), "one"),         # spot: $0.20 beats $0.25
        (2, True, (), "four"),        # `one` cannot hold a 2-GPU worker
        (8, False, (), "eight"),      # only `eight` holds an 8-GPU worker
        (1, False, ("one", "eight"), "one"),
        (16, False, (), None),
    ],
)
def test_cheapest_instance_that_fits_a_worker(gpus_per_worker, spot, allowed, expected):
    assert models.cheapest_instance(CATALOG, gpus_per_worker=gpus_per_worker, spot=spot,
                                    allowed=allowed) == expected


@pytest.mark.parametrize(("spot", "apw", "instance"), [(False, 1, "four"), (True, 1, "one"),
                                                       (False, 8, "eight")])
def test_queued_demand_requests_the_cheapest_fitting_type_then_clears(tmp_path, spot, apw,
                                                                      instance):
    h = harness(tmp_path, node("n0"), autoscaling=AutoscalingSection(max_nodes=8))
    first = h.controller.submit(job_text("first", priority=1))
    waiting = h.controller.submit(job_text("waiting", min_workers=2, max_workers=2, spot=spot,
                                           accelerators_per_worker=apw))
    report = h.tick()
    assert h.state(waiting) == "QUEUED"
    (request,) = h.cluster.requests
    assert report.requested == request
    held, *wanted = request
    assert held.resources == {"CPU": 1.0, "GPU": 1.0} and held.instance_type == "four"
    assert [(b.instance_type, b.spot, b.resources["GPU"]) for b in wanted] == [
        (instance, spot, float(apw))] * 2
    h.tick()
    # sent every round: Ray Data's autoscaling coordinator replaces the standing request
    assert h.cluster.requests == [request, request]

    h.runner.script[first] = JobProgress(state="finished", outcome="COMPLETED")
    h.cluster.node_list.append(node("n1", slots=2 * apw))
    report = h.tick()
    assert h.state(waiting) == "RUNNING"
    # the running job keeps its node requested while its workers start
    assert [b.instance_type for b in report.requested] == [instance] * 2
    assert h.cluster.clears == 0
    h.runner.script[waiting] = JobProgress(state="finished", outcome="COMPLETED")
    report = h.tick()
    assert h.cluster.clears == 1 and report.requested is None


def test_an_empty_queue_keeps_only_the_min_nodes_floor_requested(tmp_path):
    h = harness(tmp_path, node("n0"),
                autoscaling=AutoscalingSection(min_nodes=2, max_nodes=4, node_types=("four",)))
    assert h.tick().requested == h.cluster.requests[0]
    floor = h.cluster.requests[0]
    assert [(b.instance_type, b.resources) for b in floor] == [("four", {"GPU": 4.0})] * 2
    h.controller.submit(job_text("first", priority=1))
    h.controller.submit(job_text("waiting", min_workers=2, max_workers=2))
    assert len(h.tick().requested) == 3  # the running job's worker + the waiting two
    assert h.cluster.clears == 0


def test_demand_beyond_max_nodes_is_not_requested(tmp_path):
    h = harness(tmp_path, node("n0"), autoscaling=AutoscalingSection(max_nodes=2))
    h.controller.submit(job_text("first", priority=1))
    h.controller.submit(job_text("huge", min_workers=8, max_workers=8, accelerators_per_worker=8))
    h.controller.submit(job_text("small"))
    h.tick()
    (request,) = h.cluster.requests
    assert [b.instance_type for b in request] == ["four", "four"], "huge needs 8 nodes: skipped"


def test_a_stalled_job_raises_an_alert_in_tick_and_status(tmp_path):
    h = harness(tmp_path, node("n0"), stall_minutes=5)
    job_id = h.controller.submit(job_text("stuck"))
    h.tick()
    h.tick()
    assert h.tick().alerts == ()
    for _ in range(6):
        h.runner.script[job_id] = JobProgress(state="running", last_step=2)
        report = h.tick()
    assert len(report.alerts) == 1
    assert report.alerts[0].startswith(f"{job_id}: stalled: no step for 6 min")
    (row,) = h.controller.status()
    assert row.alerts == report.alerts


def test_a_job_burning_faster_than_its_budget_allows_raises_an_alert(tmp_path):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("hot", budget_usd=5.0))
    h.tick()
    h.runner.script[job_id] = JobProgress(state="running", spent_usd=1.0, last_step=3,
                                          usd_per_hour=2.0, eta_s=3 * 3600.0)
    report = h.tick()
    assert report.alerts == (
        f"{job_id}: over budget at this rate: $6.00 more needed to finish, "
        "$4.00 left of $5.00",)


@pytest.mark.parametrize(
    ("changes", "kinds"),
    [
        ({}, []),
        ({"last_step_at": 0.0}, ["stall"]),
        ({"usd_per_hour": 1.0, "eta_s": 3600.0 * 9}, []),
        ({"usd_per_hour": 1.0, "eta_s": 3600.0 * 11}, ["burn"]),
        ({"last_step_at": 0.0, "usd_per_hour": 1.0, "eta_s": 3600.0 * 11}, ["stall", "burn"]),
        ({"state": "PREEMPTED", "last_step_at": 0.0}, []),
    ],
)
def test_alert_rules(tmp_path, changes, kinds):
    h = harness(tmp_path, node("n0"))
    job_id = h.controller.submit(job_text("j", budget_usd=10.0))
    h.tick()
    job = dataclasses.replace(h.job(job_id), **changes)
    now = h.clock.now() + 60
    assert [a.kind for a in job_alerts(job, now=now, stall_minutes=15)] == kinds


def test_status_rows_show_gpus_dollars_rate_and_eta(tmp_path):
    h = harness(tmp_path, node("n0", slots=4))
    wide = h.controller.submit(job_text("wide", accelerators_per_worker=2, min_workers=1,
                                        max_workers=1, priority=1))
    queued = h.controller.submit(job_text("queued", min_workers=4, max_workers=4))
    h.tick()
    h.runner.script[wide] = JobProgress(state="running", spent_usd=0.25, last_step=10,
                                        usd_per_hour=1.6, eta_s=600.0)
    h.tick()
    rows = {r.job_id: r for r in h.controller.status()}
    row = rows[wide]
    assert (row.name, row.state, row.workers, row.gpus) == ("wide", "RUNNING", 1, 2)
    assert (row.spent_usd, row.usd_per_hour, row.eta_s, row.alerts) == (0.25, 1.6, 600.0, ())
    assert (rows[queued].state, rows[queued].gpus, rows[queued].usd_per_hour) == (
        "QUEUED", 0, 0.0)


def test_default_throughput_model_scales_linearly_with_a_sync_penalty():
    model = models.LinearScalingThroughput(128, 0.1)
    speedup = [1.0 / model.step_time_s((1,) * k, 128) * model.step_time_s((1,), 128) * k
               for k in (1, 2, 4)]
    assert speedup == pytest.approx([1.0, 2 / 1.1, 4 / 1.3])
