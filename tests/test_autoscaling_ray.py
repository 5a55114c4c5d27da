"""Autoscaling on the local fake cluster (``configs/fake_cluster.yaml``).

Shows: submitting a job that needs slots the cluster lacks adds nodes of the
chosen type; when the queue drains they are removed; both observed through
``ray.cluster_resources()``.

The live scheduler (real ``RayClusterClient`` and ``RayJobRunner``, policy fifo)
drives a fake cluster whose head has no accelerator slots (``cpu_slot``). A
1-worker x 1-slot job makes the controller request a ``g5.xlarge`` bundle (the
only allowed type); the autoscaler adds a fake ``g5.xlarge`` node
(``cpu_slot`` + ``instance_g5.xlarge``), the job trains on it to completion, the
controller withdraws its request, and the idle node is removed after the
cluster's short idle timeout.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.config.scheduler import AutoscalingSection, SchedulerConfig  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.autoscaling_cluster import fake_cluster  # noqa: E402
from tests.support.s3 import keys, s3_server  # noqa: E402

pytestmark = pytest.mark.ray

BUCKET = "costsched-autoscale"
SLOT = "cpu_slot"
NODE_TYPE = "g5.xlarge"
INSTANCE = f"instance_{NODE_TYPE}"
# Short enough for a quick scale-down; a running job's node stays requested, so the
# node is not taken as idle while the job's workers start.
IDLE_TIMEOUT_MINUTES = 0.25
TICK_S = 1.0
SCALE_UP_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 240.0
SCALE_DOWN_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def cluster():
    # The S3 server first: the fake nodes' processes inherit its endpoint and keys, so a
    # run that moves between nodes restores from object storage, not a shared folder.
    with s3_server(BUCKET), fake_cluster(idle_timeout_minutes=IDLE_TIMEOUT_MINUTES,
                                         logging_level="WARNING") as c:
        yield c


def _job_yaml(tmp_path: Path) -> str:
    data = quickstart_dict()
    data["name"] = "autoscale-tiny"
    data["dataset"]["num_samples"] = 2000
    data["training"]["num_epochs"] = 2
    data["training"]["target_metric"] = None
    data["scaling"].update(min_workers=1, max_workers=1, accelerator_resource=SLOT,
                           use_gpu=False)
    data["cost"]["instance_type"] = NODE_TYPE
    data["storage_path"] = str(tmp_path / "runs")
    data["ledger_path"] = str(tmp_path / "ledger.db")
    return yaml.safe_dump(data, sort_keys=False)


def _monitor_tail(cluster, n: int = 25) -> str:
    try:
        lines = (Path(cluster.logs_dir) / "monitor.log").read_text().splitlines()
    except OSError as exc:
        return f"(no autoscaler log: {exc})"
    return "\n".join(lines[-n:])


def _actors_on_slot_nodes(cluster) -> str:
    """Live actors on nodes with slots: any of them keeps its node from going idle."""
    try:
        from ray.util.state import list_actors
        slot_nodes = {n["NodeID"] for n in ray.nodes()
                      if n["Alive"] and n["Resources"].get(SLOT)}
        actors = list_actors(address=cluster.address, filters=[("state", "=", "ALIVE")])
        return str(sorted(a.class_name for a in actors if a.node_id in slot_nodes))
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"(state API: {exc})"


@pytest.mark.extended  # the requests it sends: also tests/test_scheduler_observe.py
def test_job_scales_fake_cluster_up_then_down(cluster, tmp_path):
    assert ray.cluster_resources().get(SLOT, 0) == 0, ray.cluster_resources()
    catalog = load_catalog()
    config = SchedulerConfig(
        policy="fifo", round_s=TICK_S, accelerator_resource=SLOT,
        state_path=str(tmp_path / "scheduler.db"),
        autoscaling=AutoscalingSection(min_nodes=0, max_nodes=2, node_types=(NODE_TYPE,)))
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient(SLOT, catalog),
        runner=RayJobRunner(catalog, str(tmp_path / "ledger.db"), str(tmp_path / "runs")),
        clock=SystemClock())
    job_id = controller.submit(_job_yaml(tmp_path))

    def context() -> str:
        return (f"\ncluster_resources={ray.cluster_resources()}\n"
                f"job events={controller.logs(job_id)}\n"
                f"live actors on {SLOT} nodes={_actors_on_slot_nodes(cluster)}\n"
                f"autoscaler log tail:\n{_monitor_tail(cluster)}")

    # The queued job needs a slot nobody has: the controller asks for a g5.xlarge bundle.
    report = controller.tick()
    assert report.requested, f"no autoscaler request for the waiting job{context()}"
    assert {b.instance_type for b in report.requested} == {NODE_TYPE}, report.requested
    assert all(b.resources.get(SLOT) == 1 for b in report.requested), report.requested

    # Tick until the job ends; the fake node must appear meanwhile.
    scaled_up: dict | None = None
    start = time.monotonic()
    while True:
        resources = ray.cluster_resources()
        if scaled_up is None and resources.get(SLOT, 0) >= 1:
            scaled_up = resources
        state = {s.job_id: s.state for s in controller.status()}[job_id]
        if state in TERMINAL:
            break
        elapsed = time.monotonic() - start
        assert scaled_up is not None or elapsed < SCALE_UP_TIMEOUT_S, \
            f"no {SLOT} node after {elapsed:.0f} s{context()}"
        assert elapsed < JOB_TIMEOUT_S, f"job still {state} after {elapsed:.0f} s{context()}"
        time.sleep(TICK_S)
        report = controller.tick()

    assert scaled_up is not None, f"job ended without a {SLOT} node ever showing{context()}"
    assert scaled_up.get(INSTANCE, 0) >= 1, f"added node is not a {NODE_TYPE}: {scaled_up}"
    assert state in ("COMPLETED", "TARGET_REACHED"), f"job ended {state}{context()}"
    assert report.requested is None, f"request not withdrawn: {report.requested}{context()}"
    types = {n.node_type for n in controller.cluster.nodes() if n.alive and n.total_slots}
    assert NODE_TYPE in types, f"scheduler sees node types {types}{context()}"

    # Queue drained, request withdrawn: the idle node goes after the idle timeout.
    start = time.monotonic()
    while ray.cluster_resources().get(SLOT, 0) > 0:
        elapsed = time.monotonic() - start
        assert elapsed < SCALE_DOWN_TIMEOUT_S, \
            f"{SLOT} node still up {elapsed:.0f} s after the queue drained{context()}"
        time.sleep(1.0)
    assert ray.cluster_resources().get(INSTANCE, 0) == 0, context()


@pytest.mark.extended  # the node counts it asks for: tests/test_scheduler_growth.py
def test_growth_that_pays_adds_a_node_the_job_then_grows_onto(cluster, tmp_path):
    """cost-aware with ``autoscaling.usd_per_job_hour``: a 1..2-worker job that scales
    (the default model) gets its own worker's node and, its second worker being worth
    its price, one more whole node; the autoscaler adds both and the job grows to 2,
    restoring from its checkpoint in the S3 server."""
    catalog = load_catalog()
    config = SchedulerConfig(
        policy="cost-aware", round_s=TICK_S, accelerator_resource=SLOT,
        state_path=str(tmp_path / "scheduler.db"),
        autoscaling=AutoscalingSection(min_nodes=0, max_nodes=2, node_types=(NODE_TYPE,),
                                       usd_per_job_hour=100.0))
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient(SLOT, catalog),
        runner=RayJobRunner(catalog, str(tmp_path / "ledger.db"), f"s3://{BUCKET}/runs"),
        clock=SystemClock())
    data = yaml.safe_load(_job_yaml(tmp_path))
    data["name"] = "autoscale-grow"
    data["dataset"]["num_samples"] = 4000
    data["training"]["num_epochs"] = 8
    data["scaling"].update(min_workers=1, max_workers=2)
    job_id = controller.submit(yaml.safe_dump(data))

    report = controller.tick()
    whole = [b for b in report.requested if "CPU" not in b.resources]
    assert [(b.instance_type, b.resources) for b in whole] == [(NODE_TYPE, {SLOT: 1.0})], \
        report.requested
    most_workers, most_slots, first_workers = 0, 0.0, 0
    start = time.monotonic()
    while True:  # to the end of the job: its growth is a stop, checkpoint and restart
        most_slots = max(most_slots, ray.cluster_resources().get(SLOT, 0))
        job = controller.store.get(job_id)
        most_workers = max(most_workers, job.workers)
        first_workers = first_workers or job.workers
        if job.state in TERMINAL:
            break
        elapsed = time.monotonic() - start
        assert elapsed < JOB_TIMEOUT_S, (
            f"job {job.state} on {job.workers} workers after {elapsed:.0f} s, "
            f"{most_slots} slots seen; events={controller.logs(job_id)}\n"
            f"autoscaler log tail:\n{_monitor_tail(cluster)}")
        time.sleep(TICK_S)
        controller.tick()
    assert most_slots >= 2, f"the growth node never came: {controller.logs(job_id)}"
    assert (first_workers, most_workers) == (1, 2), \
        f"the job never grew from 1 to 2 workers: {controller.logs(job_id)}"
    assert job.state in ("COMPLETED", "TARGET_REACHED"), controller.logs(job_id)
    # The resize stopped the run at a checkpoint in object storage, where the 2-worker
    # run restored from (no folder is read across nodes).
    assert any("checkpoint_" in key for key in keys(BUCKET, "runs/")), \
        keys(BUCKET, "runs/")
