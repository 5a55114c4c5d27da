"""Node loss under the live scheduler, on a real multi-node local Ray.

``ray.cluster_utils.Cluster``: a head without accelerator slots and three nodes
with one slot (``cpu_slot``) each. The controller runs here, with the real
cluster client and job runner and the default cost-aware policy. A 1..3-worker
job starts on all three nodes (one worker pinned to each); once it has
checkpointed, one node is removed. The
controller sees its node gone, requeues the job without charging its
``max_failures``, and resumes it from its checkpoint on the two nodes left; the
job completes and the ledger shows 3 workers, then 2.
"""

from __future__ import annotations

import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from costsched.config.scheduler import SchedulerConfig  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer.channel import progress as read_progress  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.faults import wait_for_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.extended]  # node loss: also test_no_shared_disk_ray

TICK_S = 2.0


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(3):
        cluster.add_node(num_cpus=1, resources={"cpu_slot": 1})
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _job_yaml() -> str:
    data = quickstart_dict()
    data["name"] = "spread"
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=6, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=3)
    data["checkpoint"].update(interval_steps=10, max_failures=0)
    return yaml.safe_dump(data, sort_keys=False)


def test_a_job_on_a_lost_node_resumes_from_its_checkpoint_on_the_rest(cluster, tmp_path):
    catalog = load_catalog()
    # The default model: on 2 cores the job's own measurements say fewer workers are as
    # fast, and this test is about resuming on every node left, not about sizing.
    config = SchedulerConfig(policy="cost-aware", round_s=TICK_S, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"), stop_grace_s=30.0,
                             use_measured_models=False)
    ledger_path, storage = str(tmp_path / "ledger.db"), str(tmp_path / "runs")
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, ledger_path, storage, stop_grace_s=30.0),
        clock=SystemClock())
    job_id = controller.submit(_job_yaml())
    controller.tick()
    job = controller.store.get(job_id)
    assert job.state == "RUNNING" and job.workers == 3 and len(job.placement) == 3

    def tick_until(done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"{what}: {controller.logs(job_id)}"
            controller.tick()
            time.sleep(TICK_S)

    checkpoint = {}
    tick_until(lambda: (read_progress(job_id) or {}).get("global_step", 0) >= 10,
               600, "no checkpoint")
    checkpoint["step"] = wait_for_checkpoint(f"{storage}/{job_id}", 10, timeout_s=30)
    # Not the node this test's driver process is attached to: the driver must outlive it.
    here = ray.get_runtime_context().get_node_id()
    cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id != here))

    tick_until(lambda: controller.store.get(job_id).spot_restarts >= 1, 300,
               "node loss not noticed")
    tick_until(lambda: controller.store.get(job_id).state in TERMINAL, 900, "did not finish")

    job = controller.store.get(job_id)
    assert job.state == "COMPLETED", controller.logs(job_id)
    assert (job.spot_restarts, job.failures) == (1, 0)  # max_failures 0 was not used up
    progress = read_progress(job_id)
    # Not from scratch, and at most one checkpoint interval (10 steps) behind the newest
    # checkpoint on disk: one whose report never returned (its node went away
    # mid-report) was never confirmed uploaded, so the run resumes from the one before.
    assert progress["resumed_from_step"] >= max(checkpoint["step"] - 10, 1)
    assert progress["world_size"] == 2
    intervals = Ledger(ledger_path, catalog).intervals(job_id)
    assert [i["num_workers"] for i in intervals][0] == 3
    assert intervals[-1]["num_workers"] == 2 and intervals[-1]["outcome"] == "COMPLETED"
