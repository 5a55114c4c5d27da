"""Integration on a real local Ray: a 2-worker run, and a run that survives a SIGKILL.

One Ray session for the module; accelerator slots are the custom resource
``cpu_slot`` (the production default is ``GPU``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from costsched.config.job import load_job_config  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer.train.trainer import run_job  # noqa: E402
from costsched.training.data import prepare  # noqa: E402
from tests.support.faults import kill_train_worker, wait_for_checkpoint  # noqa: E402

pytestmark = pytest.mark.ray

INTERVAL = 40
CHANGES = {
    "dataset.num_samples": 6000,
    "training.num_epochs": 5,
    "training.target_metric": None,
    "checkpoint.interval_steps": INTERVAL,
    "checkpoint.num_to_keep": 2,
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(resources={"cpu_slot": 2}, num_cpus=2, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def job_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jobs")


def _job(job_dir: Path, name: str):
    import yaml

    from tests.conftest import quickstart_dict

    data = quickstart_dict()
    data["name"] = name
    data["storage_path"] = str(job_dir / "runs")
    data["ledger_path"] = str(job_dir / "ledger.db")
    for dotted, value in CHANGES.items():
        section, key = dotted.split(".")
        data[section][key] = value
    path = job_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_job_config(path)


@pytest.fixture(scope="module")
def splits(job_dir):
    return prepare(_job(job_dir, "probe").dataset)


def _run(job, splits, run_id):
    catalog = load_catalog()
    ledger = Ledger(job.resolved_ledger_path(), catalog)
    result = run_job(job, splits, catalog=catalog, ledger=ledger, run_id=run_id, verbose=False)
    return result, ledger


@pytest.fixture(scope="module")
def uninterrupted(local_ray, job_dir, splits):
    return _run(_job(job_dir, "steady"), splits, "steady-run")


@pytest.mark.extended  # a 2-worker run, charged: also test_no_shared_disk_ray and the e2e tests
def test_two_worker_run_completes_and_is_charged(uninterrupted, job_dir):
    result, ledger = uninterrupted
    assert result.outcome == "COMPLETED"
    assert result.metrics["test_accuracy"] > 0.8
    assert result.metrics["world_size"] == 2
    steps_per_epoch = 4800 // 128
    assert result.metrics["global_step"] == 5 * steps_per_epoch
    intervals = ledger.intervals("steady-run")
    assert [(i["num_workers"], i["outcome"]) for i in intervals] == [(2, "COMPLETED")]
    assert result.cost_usd == pytest.approx(intervals[0]["cost_usd"])
    assert result.cost_usd > 0
    kept = [p for p in (job_dir / "runs" / "steady-run").glob("checkpoint_*") if p.is_dir()]
    assert 1 <= len(kept) <= 2, "only the newest num_to_keep checkpoints stay"


@pytest.mark.extended  # a killed worker: also the scheduler end-to-end test
def test_killed_worker_resumes_from_latest_checkpoint(uninterrupted, job_dir, splits):
    job = _job(job_dir, "killed")
    run_dir = job_dir / "runs" / "killed-run"
    seen: dict[str, int] = {}

    def kill_after_a_checkpoint() -> None:
        seen["checkpoint_step"] = wait_for_checkpoint(run_dir, 2 * INTERVAL, timeout_s=120)
        time.sleep(0.3)
        seen["pid"] = kill_train_worker()

    killer = threading.Thread(target=kill_after_a_checkpoint, daemon=True)
    killer.start()
    result, ledger = _run(job, splits, "killed-run")
    killer.join(timeout=5)
    assert "pid" in seen, "the drill never killed a worker"

    steady, _ = uninterrupted
    resumed = result.metrics["resumed_from_step"]
    assert resumed >= seen["checkpoint_step"], "resumed from an older checkpoint than the newest"
    assert resumed - seen["checkpoint_step"] <= INTERVAL
    assert result.metrics["global_step"] == steady.metrics["global_step"]
    assert result.outcome == "COMPLETED"
    assert abs(result.metrics["test_accuracy"] - steady.metrics["test_accuracy"]) <= 0.01 + 1e-9

    intervals = ledger.intervals("killed-run")
    assert [i["outcome"] for i in intervals] == ["FAILED", "COMPLETED"]
    assert intervals[0]["lost_s"] > 0
    assert intervals[1]["started_at"] == pytest.approx(intervals[0]["ended_at"])
    assert result.cost_usd == pytest.approx(sum(i["cost_usd"] for i in intervals))


@pytest.mark.extended  # a real profile: the pure forecast tests fit its figures
def test_profiled_forecast_is_taken_by_the_run_refreshed_and_compared(local_ray, job_dir,
                                                                       splits):
    from costsched.cost.report import runs_frame
    from costsched.ray_layer.train.profile import forecast_job

    job = _job(job_dir, "forecast")
    profile, forecast = forecast_job(job, splits, load_catalog())
    assert profile.start_up_s > 0 and profile.step_s > 0
    _, ledger = _run(job, splits, "forecast-run")
    row = runs_frame(ledger).set_index("run_id").loc["forecast-run"]
    assert row["forecast_s"] == pytest.approx(forecast.seconds_to_end)
    assert row["forecast_usd"] == pytest.approx(forecast.usd_to_end)
    assert row["time_error_pct"] >= 0 and row["cost_error_pct"] >= 0
    refreshed = [f for f in ledger.forecasts("forecast-run") if f["source"] == "curve"]
    assert [f["at_epoch"] for f in refreshed] == list(range(2, job.training.num_epochs + 1))
    # After the last epoch only the run's end remains: forecast and charge meet closely.
    assert refreshed[-1]["usd_to_end"] == pytest.approx(row["cost_usd"], rel=0.25)
