"""The live scheduler on a real local Ray: two tiny jobs submitted, scheduled, finished.

Accelerator slots are the custom resource ``cpu_slot`` (2 on this machine);
policy fifo, so both 1-worker jobs run side by side with no preemption.
"""

from __future__ import annotations

import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.ledger import Ledger  # noqa: E402
from costsched.pricing import load_catalog  # noqa: E402
from costsched.ray_layer.scheduler_cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler_runner import RayJobRunner  # noqa: E402
from costsched.scheduler.config import SchedulerConfig  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402

pytestmark = pytest.mark.ray

TIMEOUT_S = 240.0
TICK_S = 2.0


@pytest.fixture(scope="module")
def local_ray():
    ray.init(resources={"cpu_slot": 2}, num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


def _job_yaml(name: str, tmp_path) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 2000
    data["training"]["num_epochs"] = 2
    data["training"]["target_metric"] = None
    data["scaling"].update(min_workers=1, max_workers=1, accelerator_resource="cpu_slot",
                           use_gpu=False)
    data["storage_path"] = str(tmp_path / "runs")
    data["ledger_path"] = str(tmp_path / "ledger.db")
    return yaml.safe_dump(data, sort_keys=False)


def test_two_jobs_run_to_completion(local_ray, tmp_path):
    catalog = load_catalog()
    config = SchedulerConfig(policy="fifo", round_s=TICK_S, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"))
    ledger_path = str(tmp_path / "ledger.db")
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, ledger_path, str(tmp_path / "runs")),
        clock=SystemClock())
    ids = [controller.submit(_job_yaml(name, tmp_path)) for name in ("tiny-a", "tiny-b")]

    deadline = time.monotonic() + TIMEOUT_S
    while True:
        controller.tick()
        states = {s.job_id: s.state for s in controller.status()}
        if all(states[i] in TERMINAL for i in ids) or time.monotonic() > deadline:
            break
        time.sleep(TICK_S)

    rows = {s.job_id: s for s in controller.status()}
    for job_id in ids:
        assert rows[job_id].state in ("COMPLETED", "TARGET_REACHED"), controller.logs(job_id)
        assert rows[job_id].spent_usd > 0
        assert rows[job_id].restarts == 0 and rows[job_id].failures == 0
    runs = Ledger(ledger_path, catalog).runs()
    assert sorted(r["run_id"] for r in runs) == sorted(ids)  # one run per job, run once
