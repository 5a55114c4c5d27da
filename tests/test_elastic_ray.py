"""Elastic training on a real multi-node local Ray (``ray.cluster_utils.Cluster``).

Two nodes with one accelerator slot each; the job asks for 1..2 workers and
starts with 2. A node is removed mid-run (a spot reclaim or a crash): the job
resumes from its checkpoint on the remaining node with 1 worker and the same
global batch, and the ledger shows the interval at each size.
"""

from __future__ import annotations

import threading

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from costsched.config.job import load_job_config  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer.train.trainer import run_job  # noqa: E402
from costsched.training.data import prepare  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.faults import wait_for_checkpoint  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.extended]


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 2, "resources": {"cpu_slot": 1}})
    cluster.add_node(num_cpus=1, resources={"cpu_slot": 1})
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_job_shrinks_and_resumes_when_a_node_is_lost(cluster, tmp_path):
    data = quickstart_dict()
    data.update(name="elastic", storage_path=str(tmp_path / "runs"),
                ledger_path=str(tmp_path / "ledger.db"))
    data["dataset"]["num_samples"] = 6000
    data["training"].update(num_epochs=8, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=2, elastic_resize_interval_s=2.0)
    data["checkpoint"]["interval_steps"] = 20
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(data))
    job = load_job_config(tmp_path / "job.yaml")
    splits = prepare(job.dataset)
    catalog = load_catalog()
    ledger = Ledger(job.resolved_ledger_path(), catalog)

    seen = {}

    def remove_a_node_after_a_checkpoint() -> None:
        seen["step"] = wait_for_checkpoint(tmp_path / "runs" / "elastic-run", 40, timeout_s=120)
        cluster.remove_node(cluster.list_all_nodes()[-1])

    remover = threading.Thread(target=remove_a_node_after_a_checkpoint, daemon=True)
    remover.start()
    result = run_job(job, splits, catalog=catalog, ledger=ledger, run_id="elastic-run",
                     verbose=False)
    remover.join(timeout=5)

    intervals = ledger.intervals("elastic-run")
    assert [i["num_workers"] for i in intervals] == [2, 1]
    assert [i["outcome"] for i in intervals] == ["FAILED", "COMPLETED"]
    assert intervals[1]["started_at"] == pytest.approx(intervals[0]["ended_at"])
    assert result.metrics["world_size"] == 1
    assert result.metrics["resumed_from_step"] >= seen["step"], "resumed, not restarted"
    # The global batch stays 128 at either size, so the step count is the fixed-size one.
    assert result.metrics["global_step"] == 8 * (4800 // 128)
    assert result.metrics["test_accuracy"] > 0.8
