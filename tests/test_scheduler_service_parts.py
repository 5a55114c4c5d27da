"""Pure pieces of the live scheduler service: status table, metrics, progress/ETA,
stop requests, worker pinning, and the CLI's errors before any cluster is reached."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from costsched.cli.jobs import format_status
from costsched.scheduler.interfaces import JobStatus, NodeRecord
from costsched.scheduler.metrics import measure
from costsched.training.state import (
    checkpoint_name,
    checkpoint_sequence,
    eta_s,
    progress_record,
    reported_total_steps,
)
from tests.conftest import REPO


def status(job_id: str, state: str, *, workers: int = 0, gpus: int = 0, spent: float = 0.0,
           rate: float = 0.0, alerts: tuple[str, ...] = (), **extra) -> JobStatus:
    fields = dict(job_id=job_id, name=job_id.split("-")[0], state=state, priority=0,
                  workers=workers, gpus=gpus, spent_usd=spent, budget_usd=10.0,
                  usd_per_hour=rate, eta_s=None, restarts=0, preemptions=0, spot_restarts=0,
                  failures=0, alerts=alerts)
    return JobStatus(**(fields | extra))


def node(node_id: str, slots: int, usd: float, alive: bool = True) -> NodeRecord:
    return NodeRecord(node_id=node_id, node_type="g5.xlarge", gpu_model="A10G",
                      total_slots=slots, free_slots=slots, usd_per_hour=usd, alive=alive)


def test_metrics_count_queue_slots_and_dollars():
    rows = [status("a-1", "RUNNING", workers=2, gpus=4, spent=1.5, rate=4.0, restarts=2),
            status("b-2", "QUEUED"), status("c-3", "PREEMPTED", spent=0.25, preemptions=1),
            status("d-4", "COMPLETED", spent=3.0, alerts=())]
    nodes = [node("n1", 4, 5.0), node("n2", 4, 5.0), node("gone", 8, 30.0, alive=False)]
    m = measure(rows, nodes)
    assert (m.queue_length, m.slots_allocated, m.slots_idle) == (2, 4, 4)
    assert m.usd_per_hour == 4.0 and m.cluster_usd_per_hour == 10.0  # the dead node is free
    assert m.job_spent_usd == {"a-1": 1.5, "b-2": 0.0, "c-3": 0.25, "d-4": 3.0}
    assert m.job_restarts["a-1"] == 2 and m.job_preemptions["c-3"] == 1


def test_idle_slots_never_go_negative_when_a_node_just_died():
    m = measure([status("a-1", "RUNNING", workers=4, gpus=4)], [node("n1", 2, 1.0)])
    assert m.slots_idle == 0


def test_status_table_shows_every_column_and_alerts():
    rows = [dataclasses.asdict(status("train-1", "RUNNING", workers=2, gpus=2, spent=0.1234,
                                      rate=2.5, eta_s=3725.0,
                                      alerts=("train-1: stalled: no step for 20 min",))),
            dataclasses.asdict(status("sweep-2", "QUEUED"))]
    text = format_status(rows)
    header, first, second, alert = text.splitlines()
    assert header.split()[:4] == ["JOB", "NAME", "STATE", "PRI"]
    assert first.split()[:8] == ["train-1", "train", "RUNNING", "0", "2", "2", "0.123", "10.00"]
    assert "2.50" in first and "1h02m" in first
    assert second.split()[2] == "QUEUED" and " - " in second
    assert alert == "ALERT train-1: stalled: no step for 20 min"
    assert format_status([]) == "no jobs"


def status_cells(**job) -> dict[str, str]:
    """The one job's row of ``costsched status``, by column header."""
    header, row = format_status([dataclasses.asdict(status("job-1", **job))]).splitlines()
    starts = [header.index(name.strip()) for name in header.split("  ") if name.strip()]
    ends = starts[1:] + [None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}


def test_status_shows_small_dollars_to_three_significant_digits():
    cells = status_cells(state="RUNNING", spent=0.00123, rate=0.0447, budget_usd=0.004)
    assert cells["BUDGET $"] == "0.004"  # not 0.00
    assert cells["SPENT $"] == "0.00123"
    assert cells["$/H"] == "0.0447"


@pytest.mark.parametrize(("state", "steps", "cell"), [
    ("RUNNING", {"last_step": 100, "total_steps": 400}, "100/400"),
    ("PREEMPTED", {"last_step": 100, "total_steps": 400}, "100/400"),  # kept while waiting
    ("RUNNING", {"last_step": 7}, "7"),  # a run that does not report its total
    ("QUEUED", {}, "-"),
])
def test_status_shows_the_steps_done_of_the_total(state, steps, cell):
    assert status_cells(state=state, **steps)["STEPS"] == cell


@pytest.mark.parametrize(("state", "eta"), [
    ("RUNNING", "4m05s"), ("RESIZING", "4m05s"),
    ("QUEUED", "-"), ("PREEMPTED", "-"), ("COMPLETED", "-"), ("BUDGET_EXHAUSTED", "-"),
])
def test_status_shows_an_eta_only_while_a_job_holds_workers(state, eta):
    assert status_cells(state=state, eta_s=245.0)["ETA"] == eta


@pytest.mark.parametrize(("progress", "total"), [
    ({"total_steps": 400}, 400), ({"total_steps": "400"}, 400), ({}, None),
    ({"total_steps": 0}, None), ({"total_steps": None}, None),
    ({"total_steps": float("inf")}, None), ({"total_steps": "many"}, None),
])
def test_a_runs_total_steps_are_read_from_its_progress_or_none(progress, total):
    assert reported_total_steps(progress) == total


def test_progress_record_gives_an_eta_from_this_attempts_step_rate():
    progress = progress_record({"global_step": 60, "total_steps": 160, "resumed_from_step": 40,
                                "first_step_at": 1000.0, "loss": 0.5}, now=1010.0)
    assert "loss" not in progress and progress["reported_at"] == 1010.0
    # 20 steps in 10 s since the resume at step 40: 100 steps to go take 50 s
    assert eta_s(progress) == pytest.approx(50.0)


@pytest.mark.parametrize("progress", [
    {},
    {"global_step": 40, "total_steps": 100, "resumed_from_step": 40, "first_step_at": 5.0,
     "reported_at": 9.0},  # no step since the resume
    {"global_step": 10, "total_steps": 100, "resumed_from_step": -1, "first_step_at": -1.0,
     "reported_at": 9.0},  # before the first step
])
def test_no_eta_without_progress(progress):
    assert eta_s(progress) is None


def test_checkpoint_names_sort_by_sequence_and_parse_back():
    names = [checkpoint_name(n) for n in (2, 10, 1)]
    assert sorted(names) == [checkpoint_name(1), checkpoint_name(2), checkpoint_name(10)]
    assert checkpoint_sequence("bucket/runs/job-1/" + checkpoint_name(10)) == 10
    assert checkpoint_sequence(None) == -1
    assert checkpoint_sequence("checkpoint_2026-11-30_19-00-00") == -1


def test_workers_are_pinned_one_node_each_by_the_placement():
    from costsched.ray_layer.scheduler.runner import worker_nodes

    assert worker_nodes({"b": 2, "a": 1}, 3, 1) == ["a", "b", "b"]
    assert worker_nodes({"a": 4, "b": 2}, 3, 2) == ["a", "a", "b"]
    assert worker_nodes({"a": 1}, 2, 1) is None  # the placement does not cover every worker
    assert worker_nodes({}, 1, 1) is None


@pytest.mark.parametrize("args", [
    ["submit", "does-not-exist.yaml"],
    ["scheduler", "start", "--config", "does-not-exist.yaml"],
])
def test_cli_rejects_a_missing_file_before_contacting_a_cluster(args):
    result = subprocess.run([sys.executable, "-m", "costsched.cli.main", *args],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does-not-exist.yaml" in result.stderr


@pytest.mark.parametrize(("spot", "markers"), [
    (False, {"instance_g5.xlarge": 0.001, "on_demand": 0.001}),
    (True, {"instance_g5.xlarge": 0.001, "spot": 0.001}),
])
def test_autoscaler_requests_name_the_chosen_node_type_and_market(spot, markers):
    from costsched.ray_layer.scheduler.cluster import marked_bundle
    from costsched.scheduler.interfaces import ResourceBundle

    bundle = ResourceBundle(resources={"CPU": 1, "GPU": 1}, instance_type="g5.xlarge",
                            spot=spot)
    assert marked_bundle(bundle) == {"CPU": 1, "GPU": 1} | markers


def test_a_run_is_billed_at_the_node_type_and_market_it_is_placed_on():
    from costsched.config.job import CostSection
    from costsched.cost.prices import load_catalog
    from costsched.ray_layer.scheduler.cluster import billed_cost

    catalog = load_catalog()
    declared = CostSection(instance_type="g4dn.12xlarge", spot=False)
    nodes = {"t4-spot": {"GPU": 4, "instance_g4dn.12xlarge": 1, "spot": 1},
             "a10": {"GPU": 4, "instance_g5.12xlarge": 1, "on_demand": 1},
             "laptop": {"CPU": 2}}
    on_spot = billed_cost(declared, {"t4-spot": 2}, catalog, nodes)
    assert (on_spot.instance_type, on_spot.spot) == ("g4dn.12xlarge", True)
    moved = billed_cost(declared, {"a10": 1}, catalog, nodes)
    assert (moved.instance_type, moved.spot, moved.budget_usd) == (
        "g5.12xlarge", False, declared.budget_usd)
    assert billed_cost(declared, {"laptop": 2}, catalog, nodes) == declared  # no marker
    # Spread over two types: the dearest per accelerator, never less than used.
    assert billed_cost(declared, {"t4-spot": 1, "a10": 1}, catalog,
                       nodes).instance_type == "g5.12xlarge"
