"""A sweep on a cluster whose nodes share no folder, its trials' checkpoints on S3.

A local S3-compatible server (``moto`` in server mode) holds the trials' storage: the
base job's ``storage_path`` is ``s3://``. ``ray.cluster_utils.Cluster`` starts a head
(no job slot) and two one-slot nodes, each with its own temp folder; the sweep's
ledger, Tune state and outputs live in the head's folder alone. Two trials run at
once, one on each node:

- both finish, and the sweep writes its results and ``best_job.yaml``;
- the ledger (opened on the head only, written through its one writer) holds both
  trials, ended, with charges equal to those recomputed from their intervals and the
  catalog read as plain YAML, within the sweep's budget;
- every trial checkpoint is in the bucket; none is on any node's disk.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer.tune.driver import run_sweep  # noqa: E402
from costsched.sweep.config import load_sweep  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.nodes import cluster_without_shared_disk  # noqa: E402
from tests.support.s3 import keys  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.extended]  # S3 storage: also test_no_shared_disk_ray

BUCKET = "costsched-sweeps"
BUDGET_USD = 0.01


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-s3")
    with cluster_without_shared_disk(BUCKET, [{"cpu_slot": 1}] * 2) as (cluster, temp):
        yield {"root": root, "cluster": cluster, "temp": temp}


def write_sweep(root: Path) -> Path:
    base = yaml.safe_load((REPO / "configs" / "sweep_base.yaml").read_text())
    base["dataset"]["num_samples"] = 3000
    base["training"]["num_epochs"] = 3
    base["optimizer"]["lr"] = 0.005  # the baseline point is one of the choices
    base["scaling"].update(min_workers=1, max_workers=1)
    base["checkpoint"]["interval_steps"] = 10
    base["storage_path"] = f"s3://{BUCKET}/runs"
    (root / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "name": "s3sweep", "base_job": "base.yaml", "target_value": 0.99,
        "budget_usd": BUDGET_USD, "trial_budget_usd": 0.004, "num_trials": 2,
        "max_concurrent_trials": 2, "search": {"algorithm": "random", "seed": 3},
        "scheduler": {"kind": "none"},
        "space": {"optimizer.lr": {"choice": [0.005, 0.004]}},
        "storage_path": str(root / "head"), "profile": False,
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_sweep_across_nodes_checkpoints_to_s3_and_charges_the_head_ledger(site):
    root, cluster = site["root"], site["cluster"]
    summary = run_sweep(load_sweep(write_sweep(root)), load_catalog(), resume=False,
                        address=cluster.address, out_dir=None)
    assert "spent $" in summary
    outputs = root / "head" / "s3sweep" / "outputs"
    results = pd.read_csv(outputs / "results.csv")
    assert len(results) == 2
    assert set(results["stop_reason"]) <= {"COMPLETED", "BUDGET_EXHAUSTED"}, results
    assert (results["epochs"] >= 1).all()
    assert (outputs / "best_job.yaml").read_text().startswith("# NOT REACHED")

    ledger = Ledger(root / "head" / "s3sweep" / "ledger.db", load_catalog())
    runs = ledger.runs()
    assert len(runs) == 2 and all(r["outcome"] != "RUNNING" for r in runs)
    total = 0.0
    for run in runs:
        recomputed = recomputed_usd(ledger, run["run_id"])
        assert ledger.run_cost_usd(run["run_id"]) == pytest.approx(recomputed, rel=1e-6)
        total += recomputed
    assert total <= BUDGET_USD
    assert results["cost_usd"].sum() == pytest.approx(total, rel=1e-6)
    # They ran at once, so on both nodes (one slot each): their charged spans overlap.
    spans = [(min(i["started_at"] for i in ledger.intervals(r["run_id"])),
              max(i["ended_at"] for i in ledger.intervals(r["run_id"]))) for r in runs]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans

    stored = keys(BUCKET, "runs/sweeps/s3sweep/trials/")
    for run in runs:
        assert any(run["run_id"] in k and "/checkpoint_" in k and k.endswith("state.pt")
                   for k in stored), (run["run_id"], stored[:20])
    local = [p for folder in (root, site["temp"]) for p in Path(folder).rglob("checkpoint_0*")]
    assert local == []
