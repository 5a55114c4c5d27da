"""A multi-node cluster whose nodes share no folder for run state, storage on S3.

A local S3-compatible server (``moto`` in server mode, its own process) holds the
job's storage: ``storage_path`` is ``s3://``. ``ray.cluster_utils.Cluster`` starts a
head and three one-slot nodes, each with its own temp folder; the ledger and the
scheduler's files live on the head alone. One job is driven through the real job
runner (driver actor, Ray Train, the run channel) across every kind of stop:

- resize 2 -> 1 worker onto another node, the loss of that node, a restart on the
  other two, and a budget stop; in the extended tier, a preemption (the budget
  stop's mechanism with another reason) resumed on a node that joined later;
- each graceful stop saves a checkpoint first: the next attempt resumes at or
  after the step the run had reached when the stop was asked;
- after the node loss, no more than one checkpoint interval is lost;
- once the budget stop ended, no placement group is held, every slot is free and no
  actor of any of the job's runs is left (each attempt's resize, node loss and budget
  stop released what it held; ``tests/test_orphans_ray.py`` checks each ending alone);
- every checkpoint is in the bucket, none on any local disk; the ledger's charge
  equals one recomputed from its intervals and the catalog read as plain YAML,
  the attempt placed on the spot node at the spot price.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from costsched.config.scheduler import parse_submission  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer import channel  # noqa: E402
from costsched.ray_layer.ledger import ledger_for  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.training.state import checkpoint_sequence  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.nodes import node_temp_root, train_worker_nodes  # noqa: E402
from tests.support.s3 import keys, s3_server  # noqa: E402

pytestmark = pytest.mark.ray

BUCKET = "costsched-runs"
INTERVAL = 10


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("no-shared-disk")
    temp = node_temp_root()  # each node's own temp folder under it
    with s3_server(BUCKET):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "temp_dir": str(temp / "head")})
        # Node 0 is spot capacity of a known type: a run placed there is billed so.
        markers = [{"instance_local-cpu": 1, "spot": 1}, {}, {}]
        nodes = [cluster.add_node(num_cpus=1, resources={"cpu_slot": 1} | markers[i],
                                  temp_dir=str(temp / f"n{i}")) for i in range(3)]
        ray.init(address=cluster.address, logging_level="WARNING")
        try:
            yield {"root": root, "cluster": cluster, "nodes": nodes, "temp": temp}
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def _job(catalog):
    data = quickstart_dict()
    data["name"] = "s3job"
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=40, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=2)
    data["checkpoint"].update(interval_steps=INTERVAL, max_failures=0)
    data["cost"].update(budget_usd=1.0)
    config, _ = parse_submission(yaml.safe_dump(data), {}, catalog, "cpu_slot")
    return config


RUN_ACTORS = ("RunDriver", "TrainController", "RayTrainWorker", "SynchronizationActor")
HELD = ("CREATED", "PENDING", "PREPARED", "RESCHEDULING")


def _left_behind(address: str) -> tuple[list[str], list[str], float]:
    """Placement groups still held, live actors of a run's classes, free slots."""
    from ray.util.placement_group import placement_group_table
    from ray.util.state import list_actors

    groups = sorted(g["state"] for g in placement_group_table().values() if g["state"] in HELD)
    actors = sorted(a.class_name for a in list_actors(
        address=address, filters=[("state", "!=", "DEAD")], limit=1000,
        raise_on_missing_output=False) if a.class_name in RUN_ACTORS)
    return groups, actors, ray.available_resources().get("cpu_slot", 0.0)


class Drive:
    """One job driven through the real runner: waits that keep the runner advancing."""

    def __init__(self, site, job_id: str):
        self.catalog = load_catalog()
        self.ledger_path = str(site["root"] / "head" / "ledger.db")
        self.runner = RayJobRunner(self.catalog, self.ledger_path, f"s3://{BUCKET}/runs",
                                   stop_grace_s=90.0)
        self.job_id, self.config = job_id, _job(self.catalog)

    def wait(self, done, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while not (value := done()):
            state = self.runner.poll(self.job_id)
            assert state.state == "running", (what, state)
            assert time.monotonic() < deadline, what
            self.runner.advance()
            time.sleep(0.5)
        return value

    def start(self, world_size: int, slots: dict[str, int]) -> dict:
        """Start an attempt; its progress once it has stepped on ``world_size`` workers."""
        since = time.time()
        self.runner.start(self.job_id, self.config, world_size, slots)
        return self.stepping(world_size, since)

    def stepping(self, world_size: int, since: float) -> dict:
        """The progress of an attempt asked for after ``since``, once it has stepped on
        ``world_size`` workers."""
        def stepped():
            p = channel.progress(self.job_id) or {}
            return p if (p.get("world_size") == world_size and p.get("reported_at", 0) > since
                         and p.get("global_step", 0) > max(p.get("resumed_from_step", 0), 0)
                         ) else None
        return self.wait(stepped, 480, f"no step on {world_size} workers")

    def checkpointed(self) -> None:
        """Once the attempt running now has saved a checkpoint."""
        noted = channel.noted_checkpoint(self.job_id)
        self.wait(lambda: checkpoint_sequence(channel.noted_checkpoint(self.job_id))
                  > checkpoint_sequence(noted), 120, "no new checkpoint")

    def stop(self, reason: str) -> int:
        """Ask for a stop; return the step reached when it was asked, once it ended."""
        step = channel.progress(self.job_id)["global_step"]
        self.runner.stop(self.job_id, reason)
        deadline = time.monotonic() + 120
        while self.job_id not in {j for j, _ in self.runner.advance()}:
            assert time.monotonic() < deadline, f"{reason} stop did not finish"
            time.sleep(0.5)
        return step

    def released(self, cluster, free_slots: float) -> None:
        """Every attempt released what it held: nothing of the runs, the slots free."""
        deadline = time.monotonic() + 30
        while (left := _left_behind(cluster.address)) != ([], [], free_slots):
            assert time.monotonic() < deadline, \
                f"left behind (groups, actors, free slots): {left}"
            self.runner.advance()
            time.sleep(0.2)


def test_every_stop_checkpoints_to_s3_and_resumes_on_another_node(site):
    root, cluster = site["root"], site["cluster"]
    a, b, c = (n.node_id for n in site["nodes"])
    drive = Drive(site, "s3job-1")
    job_id = drive.job_id

    drive.start(2, {b: 1, c: 1})
    drive.wait(lambda: (channel.progress(job_id) or {}).get("global_step", 0) >= INTERVAL, 240,
               "no checkpoint")

    # Resize 2 -> 1 onto node a: checkpoint first, resume from S3 there.
    asked, step = time.time(), channel.progress(job_id)["global_step"]
    drive.runner.resize(job_id, 1, {a: 1})
    progress = drive.stepping(1, asked)
    assert progress["resumed_from_step"] >= step
    assert train_worker_nodes() == {a}
    # The scheduler learns the run's total steps (its work left in steps): 40 epochs.
    polled = drive.runner.poll(job_id)
    assert polled.total_steps == progress["total_steps"] > polled.last_step >= step
    assert polled.total_steps % 40 == 0

    # Node a is lost after its attempt checkpointed: resume on b and c, losing at most
    # one checkpoint interval.
    drive.checkpointed()
    reached = channel.progress(job_id)["global_step"]
    cluster.remove_node(site["nodes"][0])
    drive.runner.stop(job_id, "node_lost")  # what the scheduler does on seeing the node gone
    drive.runner.advance()
    progress = drive.start(2, {b: 1, c: 1})
    assert progress["resumed_from_step"] >= reached - INTERVAL
    assert train_worker_nodes() == {b, c}

    # A budget stop checkpoints first too.
    sequence = checkpoint_sequence(channel.noted_checkpoint(job_id))
    drive.stop("budget")
    assert checkpoint_sequence(channel.noted_checkpoint(job_id)) > sequence
    drive.released(cluster, 2.0)  # b and c

    # Every checkpoint went to the bucket; none to a local disk.
    stored = keys(BUCKET, f"runs/{job_id}/")
    assert any("/checkpoint_" in k and k.endswith("state.pt") for k in stored), stored
    local = [p for folder in (root, site["temp"]) for p in Path(folder).rglob("checkpoint_0*")] + \
        [p for p in (Path.home() / ".costsched" / "runs" / job_id).rglob("*")]
    assert local == []

    ledger = ledger_for(drive.ledger_path, drive.catalog)
    intervals = ledger.intervals(job_id)
    assert [i["num_workers"] for i in intervals] == [2, 1, 2]
    # The second attempt ran on node a, spot capacity: billed at the spot price.
    assert ledger.run_cost_usd(job_id) == pytest.approx(
        recomputed_usd(ledger, job_id, spot_attempts=frozenset({2})), rel=1e-6)


@pytest.mark.extended  # the budget stop above is the same stop, with another reason
def test_a_preempted_job_resumes_from_s3_on_a_node_that_joined_later(site):
    """After the test above (node a gone): a fresh node joins; a job preempted on node b
    resumes there from its S3 checkpoint, at or after the step it was preempted at."""
    cluster, b = site["cluster"], site["nodes"][1].node_id
    fresh = cluster.add_node(num_cpus=1, resources={"cpu_slot": 1},
                             temp_dir=str(site["temp"] / "n3"))
    drive = Drive(site, "s3job-2")
    drive.start(1, {b: 1})
    drive.checkpointed()
    step = drive.stop("preempted")
    progress = drive.start(1, {fresh.node_id: 1})
    assert progress["resumed_from_step"] >= step
    assert train_worker_nodes() == {fresh.node_id}
    drive.stop("budget")
    drive.released(cluster, ray.cluster_resources()["cpu_slot"])  # every slot free again
    ledger = ledger_for(drive.ledger_path, drive.catalog)
    assert [i["num_workers"] for i in ledger.intervals(drive.job_id)] == [1, 1]
    assert ledger.run_cost_usd(drive.job_id) == pytest.approx(
        recomputed_usd(ledger, drive.job_id), rel=1e-6)
