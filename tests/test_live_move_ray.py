"""A live move at the same size, on a real local Ray cluster whose nodes share no disk.

``ray.cluster_utils.Cluster``: a head without slots and two nodes of two ``cpu_slot``
each, every node with its own temp folder, run state on a local S3 server (``moto``).
Other work (an actor of this test) holds one slot of each node, so a job of exactly two
workers, driven by the controller with the real cluster client, job runner and the
default ``cost-aware`` policy, starts spread over both nodes. Once the other work on
one node ends, the scheduler moves the job onto that node whole: one restart at the
same size, logged as such, resumed from its checkpoint in the bucket at or after the
step it had reached, its workers then on that node alone as Ray reports them. It moves
once, and the ledger bills both attempts at two workers, as recomputed from its
intervals and the catalog read as plain YAML. And a job is never started on a slot the
other work holds beside a job whose worker has not yet taken its own.
"""

from __future__ import annotations

import itertools
import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.config.scheduler import SchedulerConfig  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer import channel  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support import ticking  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.nodes import cluster_without_shared_disk, train_worker_nodes  # noqa: E402
from tests.support.s3 import keys  # noqa: E402

pytestmark = pytest.mark.ray

BUCKET = "costsched-moves"
TICK_S = 2.0
INTERVAL = 10


@pytest.fixture(scope="module")
def site():
    with cluster_without_shared_disk(BUCKET, [{"cpu_slot": 2}] * 2, cpus_per_node=2) as (
            cluster, _):
        yield cluster


def _job_yaml(name: str = "pair", workers: int = 2, epochs: int = 6) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=epochs, target_metric=None)
    data["scaling"].update(min_workers=workers, max_workers=workers)
    data["checkpoint"].update(interval_steps=INTERVAL)
    return yaml.safe_dump(data, sort_keys=False)


def _controller(tmp_path) -> tuple[SchedulerController, str]:
    """The controller over the real cluster client and runner; the ledger's path."""
    catalog = load_catalog()
    config = SchedulerConfig(policy="cost-aware", round_s=TICK_S, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"), stop_grace_s=60.0)
    ledger_path = str(tmp_path / "ledger.db")
    return SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, ledger_path, f"s3://{BUCKET}/runs", stop_grace_s=60.0),
        clock=SystemClock()), ledger_path


def test_a_split_job_moves_onto_one_node_once_it_frees(site, hold, tmp_path):
    n0, n1 = (n.node_id for n in site.worker_nodes)
    holders = {n: hold(n) for n in (n0, n1)}
    controller, ledger_path = _controller(tmp_path)
    job_id = controller.submit(_job_yaml())

    def tick_until(done, timeout_s: float, what: str):
        return ticking.tick_until(controller, job_id, done, timeout_s, what, tick_s=TICK_S)

    def stepped_on_2(since: float):
        """The progress of an attempt begun after ``since`` once it stepped on 2 workers."""
        return ticking.stepped(job_id, since, workers=2)

    def split_and_past_a_checkpoint():
        job = controller.store.get(job_id)
        # Not moved onto slots the other work holds (its own, before its workers hold
        # them, look free in Ray's count).
        assert (job.placement, job.restarts) == ({n0: 1, n1: 1}, 0), controller.logs(job_id)
        return (stepped_on_2(started) or {}).get("global_step", 0) > INTERVAL

    started = time.time()
    controller.tick()
    assert controller.store.get(job_id).placement == {n0: 1, n1: 1}, "no node had 2 free"
    tick_until(split_and_past_a_checkpoint, 300, "no checkpoint on the split placement")
    assert train_worker_nodes() == {n0, n1}
    job = controller.store.get(job_id)
    assert (job.state, job.restarts) == ("RUNNING", 0), "a split job alone stays put"

    # The other work on n1 ends: the job moves onto n1 whole, at the same size.
    reached, freed = channel.progress(job_id)["global_step"], time.time()
    ray.kill(holders[n1])
    tick_until(lambda: controller.store.get(job_id).restarts, 120, "no move")
    job = controller.store.get(job_id)
    assert (job.workers, job.placement, job.restarts) == (2, {n1: 2}, 1)
    assert controller.logs(job_id)[-1]["detail"] == "moved onto 1 node from 2"
    progress = tick_until(lambda: stepped_on_2(freed), 300, "no step after the move")
    assert progress["resumed_from_step"] >= reached, "resumed from the checkpoint of the stop"
    assert train_worker_nodes() == {n1}, "Ray runs its workers on that node alone"

    tick_until(lambda: controller.store.get(job_id).state == "COMPLETED", 600, "not finished")
    job = controller.store.get(job_id)
    assert (job.state, job.restarts) == ("COMPLETED", 1), controller.logs(job_id)
    stored = keys(BUCKET, f"runs/{job_id}/")
    assert any("/checkpoint_" in k for k in stored), stored

    ledger = Ledger(ledger_path, load_catalog())
    assert [i["num_workers"] for i in ledger.intervals(job_id)] == [2, 2]
    assert ledger.run_cost_usd(job_id) == pytest.approx(recomputed_usd(ledger, job_id),
                                                        rel=1e-6)


def test_no_job_starts_on_a_slot_other_work_holds_beside_a_starting_job(site, hold, tmp_path):
    """One slot of each node is held by other work: two 1-worker jobs fit. The first
    starts; in the next round, before its worker has taken its slot (Ray still reports
    that slot free), two more arrive: one gets the other node's slot, the third waits
    for a job to end (not the slot that other work holds beside the starting job)."""
    for n in site.worker_nodes:
        hold(n.node_id)
    controller, ledger_path = _controller(tmp_path)
    first = controller.submit(_job_yaml("first", workers=1, epochs=2))
    controller.tick()
    assert controller.store.get(first).state == "RUNNING"
    jobs = [first] + [controller.submit(_job_yaml(name, workers=1, epochs=2))
                      for name in ("second", "third")]
    deadline = time.monotonic() + 600
    while not all(controller.store.get(j).state in TERMINAL for j in jobs):
        assert time.monotonic() < deadline, [controller.logs(j) for j in jobs]
        controller.tick()
        time.sleep(TICK_S)
    for j in jobs:
        job = controller.store.get(j)
        assert (job.state, job.failures) == ("COMPLETED", 0), controller.logs(j)
    # The runs' own record: no more than two ran at once. A run's interval opens at its
    # start, and a job the scheduler started only once Ray showed a slot free (after the
    # run before it ended and closed its interval) never makes a third.
    ledger = Ledger(ledger_path, load_catalog())
    edges = sorted((t, step) for j in jobs for i in ledger.intervals(j)
                   for t, step in ((i["started_at"], 1), (i["ended_at"], -1)))
    at_once = max(itertools.accumulate(step for _, step in edges))
    assert at_once == 2, [ledger.intervals(j) for j in jobs]
