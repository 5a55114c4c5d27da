"""The live scheduler on a real local Ray cluster of two GPU models.

``ray.cluster_utils.Cluster``: a head without accelerator slots, one node marked as a
``g4dn.12xlarge`` (T4) and one as a ``p4d.24xlarge`` (A100), two ``cpu_slot`` slots
each, told apart only by their ``instance_<type>`` marker resources, as on a cloud
cluster (``cluster.yaml``); each node has its own temp folder and run state is on a
local S3 server, so a job moved between the models resumes from the bucket. The
controller runs here with the real cluster client, job runner and the default
``cost-aware`` policy. An elastic job (1..4 workers) submitted alone gets the two slots
of one node, not four across both models; a second one then gets the other node. Both
pool their measured steps under one ``training.measurements_key`` and run to the end. At
every tick each job's placement, as the scheduler records it, is on nodes of one GPU
model; every attempt is billed at the catalog price of a node type the test saw it on
while it ran (from the test's own map of nodes and the catalog read as plain YAML); the
steps measured on each model are pooled under that model, and a model is fitted to each
pool.
"""

from __future__ import annotations

import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.config.scheduler import SchedulerConfig  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.policy.registry import make_policy  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from costsched.scheduler.typed_views import TypedViews  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.charges import interval_usd  # noqa: E402
from tests.support.nodes import cluster_without_shared_disk  # noqa: E402

pytestmark = pytest.mark.ray

BUCKET = "costsched-typed"
TICK_S = 2.0
TYPES = ("g4dn.12xlarge", "p4d.24xlarge")
KEY = "mnist1d-cnn"


@pytest.fixture(scope="module")
def cluster():
    """Node id -> node type of the two marked nodes; the nodes share no disk."""
    with cluster_without_shared_disk(BUCKET, [{"cpu_slot": 2, f"instance_{t}": 1} for t in TYPES],
                                     cpus_per_node=2):
        yield {n["NodeID"]: t for n in ray.nodes() for t in TYPES
               if n["Alive"] and n["Resources"].get(f"instance_{t}")}


def _job_yaml(name: str) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=4, target_metric=None, measurements_key=KEY)
    data["scaling"].update(min_workers=1, max_workers=4)
    data["checkpoint"].update(interval_steps=10)
    data["cost"].update(budget_usd=5.0)
    return yaml.safe_dump(data, sort_keys=False)


def _types_while(seen: list[tuple[float, str]], start: float, end: float) -> set[str]:
    """The node types a job was seen on from ``start`` to ``end``; none seen then, the
    last seen before. A decision shows in the job's placement before the attempt it
    replaces has stopped, so an attempt followed by a move shows both types."""
    during = {t for at, t in seen if start <= at <= end}
    before = [t for at, t in seen if at < start]
    return during or set(before[-1:])


def test_jobs_on_two_gpu_models_stay_on_one_model_and_pay_its_price(cluster, tmp_path):
    catalog = load_catalog()
    config = SchedulerConfig(policy="cost-aware", round_s=TICK_S, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"), stop_grace_s=30.0)
    ledger_path = str(tmp_path / "ledger.db")
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, ledger_path, f"s3://{BUCKET}/runs", stop_grace_s=30.0),
        clock=SystemClock())
    # Alone, a job that may use 4 workers gets the 2 of one node: 4 would span both models.
    wide = controller.submit(_job_yaml("wide"))
    controller.tick()
    job = controller.store.get(wide)
    assert (job.state, job.workers, len(job.placement)) == ("RUNNING", 2, 1), (
        job, controller.logs(wide))
    other = controller.submit(_job_yaml("other"))  # gets the other model's node
    jobs = [wide, other]

    seen: dict[str, list[tuple[float, str]]] = {j: [] for j in jobs}  # (time, node type)
    deadline = time.monotonic() + 900
    while not all(controller.store.get(j).state in TERMINAL for j in jobs):
        assert time.monotonic() < deadline, [controller.logs(j) for j in jobs]
        controller.tick()
        for j in jobs:
            job = controller.store.get(j)
            types = {cluster[n] for n, count in job.placement.items() if count > 0}
            assert len(types) <= 1, f"{j} spans {types}: {job.placement}"
            if types:
                seen[j].append((time.time(), types.pop()))
        time.sleep(TICK_S)

    for j in jobs:
        assert controller.store.get(j).state == "COMPLETED", controller.logs(j)
    # Both nodes were used: two jobs that cannot share a model's node each got one.
    assert {t for j in jobs for _, t in seen[j]} == set(TYPES), seen

    ledger = Ledger(ledger_path, catalog)
    for j in jobs:
        intervals = ledger.intervals(j)
        assert intervals, j
        for interval in intervals:
            # Billed at the price of the node type the job was seen on while the attempt
            # ran (a start withdrawn by a newer decision never ran and has no interval).
            types = _types_while(seen[j], interval["started_at"], interval["ended_at"])
            assert any(interval["cost_usd"] == pytest.approx(interval_usd(interval, t), rel=1e-6)
                       for t in types), (interval, types, seen[j])

    # The steps measured on each model are pooled under it, apart, and a model is fitted
    # to each pool: what the policy describes a job of this key by on each model.
    typed = TypedViews(controller.job_models, make_policy("cost-aware"))
    for model in {catalog.instance(t).gpu_model for t in TYPES}:
        assert controller.job_models.pooled(f"{KEY}@{model}"), model
        assert typed.pool_model(f"{KEY}@{model}") is not None, model
