"""The live scheduler asks for nodes to grow jobs onto when growth pays
(``autoscaling.usd_per_job_hour``), as the simulator's ``--autoscale`` sizes its cluster.

The expected node counts are worked out by hand below from the default throughput model
(``sync_penalty_per_gpu`` p: speedup s(k) = k / (1 + p (k - 1))) and the rule that a move
from k to k + d GPUs is worth (d s(k) / (s(k + d) - s(k)) - k) GPU-hours per job-hour it
saves, at the cheapest allowed type's $0.80 per GPU-hour (``four``: 4 GPUs, $3.20/h).
"""

from __future__ import annotations

import pytest
import yaml

from costsched.config.scheduler import AutoscalingSection, SchedulerConfig, load_scheduler_config
from costsched.errors import ConfigError
from costsched.scheduler.interfaces import JobProgress
from tests.test_scheduler_fakes import harness, job_text, node

# p = 0.05: s(1, 2, 4, 8, 12) = 1, 1.905, 3.478, 5.926, 7.742. The policy grows the job
# 1 -> 2 -> 4 -> 8 -> 12 (its max); per job-hour saved the moves cost
# 1->2: 0.105 GPU-h = $0.08; 2->4: 0.422 = $0.34; 4->8: 1.683 = $1.35; 8->12: 5.05 = $4.04.
WORTH = [(16.0, 12), (2.0, 8), (1.0, 4)]
"""(dollars a job-hour is worth, GPUs the job is worth growing to)."""


@pytest.mark.parametrize(("usd_per_job_hour", "worth_gpus"), WORTH)
def test_nodes_are_requested_for_the_growth_that_pays_and_used_when_they_come(
        tmp_path, usd_per_job_hour, worth_gpus):
    h = harness(tmp_path, node("n0", slots=4, usd_per_hour=3.2), autoscaling=(
        AutoscalingSection(max_nodes=3, node_types=("four",),
                           usd_per_job_hour=usd_per_job_hour)))
    job = h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    report = h.tick()
    assert h.job(job).workers == 4  # all the node has
    workers = [b for b in report.requested if "CPU" in b.resources]
    grow = [b for b in report.requested if "CPU" not in b.resources]
    assert len(workers) == 4  # its own workers stay requested
    assert [(b.instance_type, b.resources) for b in grow] == [("four", {"GPU": 4.0})] * (
        (worth_gpus - 4) // 4)  # whole nodes of the cheapest type
    if grow:
        h.cluster.node_list.append(node("n1", slots=4, usd_per_hour=3.2))  # it arrives
        report = h.tick()
        assert h.job(job).workers == 8  # the policy grows the job onto it
        assert len([b for b in report.requested if "CPU" not in b.resources]) == (
            (worth_gpus - 8) // 4)
    h.runner.script[job] = JobProgress(state="finished", outcome="COMPLETED")
    assert h.tick().requested is None  # nothing left to run: the request goes


def test_a_job_bound_by_its_all_reduce_gets_no_node_to_grow_onto(tmp_path):
    # p = 0.5: s(4) = 1.6, s(8) = 1.778: 4 -> 8 costs 4 x 1.6 / 0.178 - 4 = 32 GPU-h
    # ($25.6) per job-hour saved, more than $16; 8 -> 12 (s 1.846) costs more still.
    h = harness(tmp_path, node("n0", slots=4, usd_per_hour=3.2), sync_penalty_per_gpu=0.5,
                autoscaling=AutoscalingSection(max_nodes=3, node_types=("four",),
                                               usd_per_job_hour=16.0))
    h.controller.submit(job_text("bound", min_workers=1, max_workers=12))
    report = h.tick()
    assert [b for b in report.requested if "CPU" not in b.resources] == []


@pytest.mark.parametrize("scaling", [
    AutoscalingSection(max_nodes=3, node_types=("four",)),  # no value per job-hour
    AutoscalingSection(max_nodes=0, usd_per_job_hour=16.0),  # no node may be added
])
def test_without_a_value_per_job_hour_or_room_no_node_is_requested_for_growth(
        tmp_path, scaling):
    h = harness(tmp_path, node("n0", slots=4, usd_per_hour=3.2), autoscaling=scaling)
    h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    assert len(h.tick().requested) == 4


@pytest.mark.parametrize(("key", "value"), [("usd_per_job_hour", 16.0), ("half_life_s", 300.0)])
def test_the_settings_are_read_from_the_config_and_checked(tmp_path, key, value):
    path = tmp_path / "scheduler.yaml"
    settings = {"max_nodes": 8, "usd_per_job_hour": 16.0, key: value}
    path.write_text(yaml.safe_dump({"autoscaling": settings}))
    assert getattr(load_scheduler_config(path).autoscaling, key) == value
    for bad in (0, -1, float("inf")):
        with pytest.raises(ConfigError, match=key):
            SchedulerConfig(autoscaling=AutoscalingSection(**{"usd_per_job_hour": 16.0,
                                                               key: bad}))


def test_the_half_life_needs_a_value_per_job_hour():
    with pytest.raises(ConfigError, match="usd_per_job_hour"):
        AutoscalingSection(half_life_s=300.0)


@pytest.mark.parametrize(("usd_per_job_hour", "grow_nodes"), [(16.0, 2), (1.0, 0)])
def test_from_zero_nodes_the_queued_job_and_its_growth_ask_for_whole_nodes_once(
        tmp_path, usd_per_job_hour, grow_nodes):
    """No node yet: the queued job's own worker asks for one node; growth adds only the
    nodes past it (12 GPUs worth it at $16 = 3 nodes in all; 4 at $1 = that one node)."""
    h = harness(tmp_path, autoscaling=AutoscalingSection(
        max_nodes=4, node_types=("four",), usd_per_job_hour=usd_per_job_hour))
    h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    report = h.tick()
    workers = [b for b in report.requested if "CPU" in b.resources]
    grow = [b for b in report.requested if "CPU" not in b.resources]
    assert len(workers) == 1 and workers[0].instance_type == "four"
    assert [(b.instance_type, b.resources) for b in grow] == [("four", {"GPU": 4.0})] * grow_nodes


def grow_bundles(report) -> list:
    return [b for b in report.requested if "CPU" not in b.resources]


@pytest.mark.parametrize(("half_life_s", "first_asked"), [(None, 1), (300.0, 3)])
def test_with_hysteresis_growth_nodes_are_asked_for_only_once_the_average_wants_them(
        tmp_path, half_life_s, first_asked):
    """The job is worth 12 GPUs at $16 (3 nodes; 1 there). With a 300 s half-life and
    60 s rounds, a = 1 - 2 ** (-60 / 300) = 0.129 of each round's count goes into an
    average that starts at the 1 node there: 1.259, 1.484, 1.680. The count changes only
    once it is past 1.5, at the third round, and then to the 3 wanted: 2 nodes to add."""
    h = harness(tmp_path, node("n0", slots=4, usd_per_hour=3.2), autoscaling=(
        AutoscalingSection(max_nodes=3, node_types=("four",), usd_per_job_hour=16.0,
                           half_life_s=half_life_s)))
    job = h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    asked = [len(grow_bundles(h.tick())) for _ in range(4)]
    assert h.job(job).workers == 4
    assert asked == [0] * (first_asked - 1) + [2] * (5 - first_asked)


def test_with_hysteresis_a_job_done_within_two_rounds_leaves_nothing_to_a_later_one(tmp_path):
    """The first job is worth 3 nodes for two rounds (average 1.484) and ends; after two
    idle hours the next job starts from the node there, not from that average: its
    growth nodes too come at its third round."""
    h = harness(tmp_path, node("n0", slots=4, usd_per_hour=3.2), autoscaling=(
        AutoscalingSection(max_nodes=3, node_types=("four",), usd_per_job_hour=16.0,
                           half_life_s=300.0)))
    first = h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    assert grow_bundles(h.tick()) == grow_bundles(h.tick()) == []
    h.runner.script[first] = JobProgress(state="finished", outcome="COMPLETED")
    assert all(h.tick().requested is None for _ in range(120))
    h.controller.submit(job_text("later", min_workers=1, max_workers=12))
    assert [len(grow_bundles(h.tick())) for _ in range(4)] == [0, 0, 2, 2]


@pytest.mark.parametrize(("slots", "min_nodes", "asked"), [
    (8, 0, [0, 0, 0, 0, 0, 1, 1]),  # an 8-GPU node there is 2 nodes of the 4-GPU type
    (4, 2, [1, 1, 1, 1, 1, 2, 2]),  # the floor's second node is asked for at once
])
def test_hysteresis_counts_nodes_of_the_growth_type_from_at_least_the_floor(
        tmp_path, slots, min_nodes, asked):
    """3 nodes wanted; the average starts from 2 either way (8 GPUs there, or the floor of
    2 while its second node boots): 2.129, 2.241, 2.338, 2.424, 2.498, 2.563: past 2.5
    at the sixth round."""
    h = harness(tmp_path, node("n0", slots=slots, usd_per_hour=0.8 * slots), autoscaling=(
        AutoscalingSection(min_nodes=min_nodes, max_nodes=3, node_types=("four",),
                           usd_per_job_hour=16.0, half_life_s=300.0)))
    h.controller.submit(job_text("scales", min_workers=1, max_workers=12))
    assert [len(grow_bundles(h.tick())) for _ in range(7)] == asked
