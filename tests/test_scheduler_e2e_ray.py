"""The live scheduler end to end, driven the way a user drives it.

A real local Ray cluster (``ray.cluster_utils.Cluster``, dashboard on) with three
emulated accelerator slots (the custom resource ``cpu_slot``).
``ray job submit --working-dir . -- python jobs/scheduler.py`` (the extended
tier's first test) or ``costsched scheduler start`` starts the scheduler actor;
``costsched submit/status/cancel/logs/report`` (subprocesses) talk to it. Shown here:

* user code shipped with ``ray job submit --working-dir``: preempted by an urgent
  job, which is then cancelled, it resumes from its checkpoint and completes, charged
  as recomputed; the cancelled job ends CANCELLED;
* three jobs of different priorities and budgets: the high-priority arrival
  preempts the low one, which resumes from its checkpoint afterwards; the
  small-budget job ends BUDGET_EXHAUSTED; a training worker of the urgent job is
  SIGKILLed mid-run and it recovers; all end in the right state, and the
  ledger's total equals the sum of the per-job charges;
* the scheduler's own metrics on Ray's Prometheus endpoint;
* bad input: one-line errors, non-zero exits, nothing changed;
* the scheduler actor killed mid-run: it restarts, reattaches, and the job
  finishes once.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from costsched.config.job import load_job_config  # noqa: E402
from costsched.cost.accounting import record_plan_forecast  # noqa: E402
from costsched.cost.forecast import RunProfile, forecast_from_profile  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.plans import PROFILED_CONFIG_KEY  # noqa: E402
from costsched.cost.prices import load_catalog, rate_of_job  # noqa: E402
from costsched.ray_layer.channel import progress as read_progress  # noqa: E402
from costsched.ray_layer.cluster import ensure_auth_token  # noqa: E402
from costsched.ray_layer.scheduler.service import NAMESPACE, SERVICE_NAME  # noqa: E402
from tests.conftest import REPO, quickstart_dict  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.faults import kill_train_worker, train_worker_pids  # noqa: E402

pytestmark = pytest.mark.ray

TERMINAL = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED", "FAILED", "CANCELLED")
RAY_BIN = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, predicate, timeout_s: float, poll_s: float = 1.0, detail=lambda: ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}. {detail()}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The cluster, the scheduler config and paths; the scheduler started through
    ``ray job submit`` as a user would."""
    root = tmp_path_factory.mktemp("e2e")
    ensure_auth_token()  # clients use token auth when a token exists; make sure one does
    dashboard_port = _free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "resources": {"cpu_slot": 3}, "include_dashboard": True,
        "dashboard_port": dashboard_port})
    ray.init(address=cluster.address, namespace=NAMESPACE, logging_level="ERROR")
    config = {"policy": "fifo", "round_s": 2, "restart_s": 5, "stall_minutes": 5,
              "state_path": str(root / "scheduler.db"), "ledger_path": str(root / "ledger.db"),
              "storage_path": str(root / "runs"), "stop_grace_s": 60,
              "accelerator_resource": "cpu_slot"}
    (root / "scheduler.yaml").write_text(yaml.safe_dump(config))
    yield {"cluster": cluster, "root": root, "address": cluster.address,
           "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    ray.shutdown()
    cluster.shutdown()


def cli(site: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "costsched.cli.main", *args, "--address",
                           site["address"]], capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def job_file(site: dict[str, Any], name: str, *, workers: int, epochs: int,
             budget_usd: float = 1.0, priority: int = 0) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=epochs, target_metric=None)
    data["scaling"].update(min_workers=workers, max_workers=workers)
    data["checkpoint"].update(interval_steps=10, max_failures=3)
    data["cost"].update(budget_usd=budget_usd, priority=priority)
    path = site["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def rows() -> dict[str, dict[str, Any]]:
    handle = ray.get_actor(SERVICE_NAME, namespace=NAMESPACE)
    return {r["job_id"]: r for r in ray.get(handle.status.remote(), timeout=60)["jobs"]}


def step(site: dict[str, Any], job_id: str) -> int:
    progress = read_progress(job_id) or {}
    return int(progress.get("global_step", -1))


def test_no_scheduler_running_is_a_one_line_error(site):
    result = cli(site, "submit", job_file(site, "early", workers=1, epochs=1))
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "no scheduler is running" in result.stderr and "costsched scheduler start" in \
        result.stderr


def ray_job_submit(site: dict[str, Any], working_dir: Path, *command: str,
                   extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``ray job submit``; retried while the dashboard's job agent is still starting
    (Ray answers "No available agent" then), as a user would retry it."""
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(
            [str(RAY_BIN), "job", "submit", "--address", site["dashboard"], "--working-dir",
             str(working_dir), *extra, "--", *command],
            capture_output=True, text=True, timeout=300, cwd=working_dir)
        if "No available agent" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(3.0)


def submit_scheduler(site: dict[str, Any]) -> subprocess.CompletedProcess:
    """``ray job submit --working-dir <repo> -- python jobs/scheduler.py``, as a user
    starts the scheduler."""
    submitted = ray_job_submit(
        site, REPO, sys.executable, "jobs/scheduler.py", "--config",
        str(site["root"] / "scheduler.yaml"),
        extra=("--runtime-env-json", json.dumps(
            {"excludes": [".venv", ".git", "**/__pycache__", ".pytest_cache"]})))
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    return submitted


def started_scheduler(site: dict[str, Any]) -> None:
    """The scheduler the first end-to-end test started through ``ray job submit``;
    when that (extended) test did not run, started here with ``costsched scheduler
    start``, as on one machine."""
    try:
        ray.get_actor(SERVICE_NAME, namespace=NAMESPACE)
    except ValueError:
        started = cli(site, "scheduler", "start", "--config", str(site["root"] / "scheduler.yaml"))
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        assert "scheduler costsched-scheduler running: policy fifo" in started.stdout


@pytest.mark.extended  # ray job submit, a preemption and a resume: also the user-entrypoint test
def test_scheduler_through_ray_job_submit_runs_three_jobs_to_the_right_end(site):
    submitted = submit_scheduler(site)
    assert "scheduler costsched-scheduler running: policy fifo" in submitted.stdout

    # Long enough to still be training when the urgent job arrives: on an idle machine
    # 5 epochs (90 steps) ended within seconds of its tenth step, before the preemption.
    low = cli(site, "submit", job_file(site, "low", workers=2, epochs=20)).stdout.strip()
    capped = cli(site, "submit", job_file(site, "capped", workers=1, epochs=40),
                 "--budget-usd", "0.0003", "--priority", "1").stdout.strip()
    assert low and capped
    _wait("the low-priority job to checkpoint", lambda: step(site, low) >= 10, 180,
          detail=lambda: rows())

    urgent = cli(site, "submit", job_file(site, "urgent", workers=2, epochs=4,
                                          priority=10)).stdout.strip()
    _wait("the urgent job to preempt the low one",
          lambda: rows()[low]["state"] == "PREEMPTED" and rows()[urgent]["state"] == "RUNNING",
          120, detail=lambda: rows())
    preempted_at = step(site, low)
    assert preempted_at >= 10  # it stopped at a checkpoint it had just saved
    # Waiting, it still shows its steps done of its total (the scheduler polled its run
    # in the round that preempted it): the policy weighs it by the steps it has left.
    waiting = rows()[low]
    assert waiting["total_steps"] == read_progress(low)["total_steps"] > 0
    assert 10 <= waiting["last_step"] <= preempted_at

    _wait("the capped job to stop at its budget",
          lambda: rows()[capped]["state"] in TERMINAL, 180, detail=lambda: rows())
    _wait("the urgent job to checkpoint", lambda: step(site, urgent) >= 20, 180,
          detail=lambda: rows())
    assert train_worker_pids(), "no training worker to kill"
    kill_train_worker()

    _wait("every job to end", lambda: all(r["state"] in TERMINAL for r in rows().values()),
          400, poll_s=2.0, detail=lambda: rows())
    final = rows()
    assert final[low]["state"] == "COMPLETED", cli(site, "logs", low).stdout
    assert final[urgent]["state"] == "COMPLETED", cli(site, "logs", urgent).stdout
    assert final[capped]["state"] == "BUDGET_EXHAUSTED", cli(site, "logs", capped).stdout
    assert final[capped]["spent_usd"] <= 0.0003  # no slack: the stop's cost included

    assert final[low]["preemptions"] == 1 and final[low]["restarts"] == 1
    low_progress = read_progress(low)
    assert low_progress["resumed_from_step"] >= preempted_at  # resumed, not restarted
    events = [e["kind"] for e in json_logs(site, low)]
    assert "preempted" in events and "resumed" in events

    ledger = Ledger(site["root"] / "ledger.db", load_catalog())
    urgent_intervals = ledger.intervals(urgent)
    assert any(i["outcome"] == "FAILED" for i in urgent_intervals)  # the killed worker
    # Ray Train recovered it within the run, from its checkpoint: no scheduler restart.
    assert final[urgent]["failures"] == 0, cli(site, "logs", urgent).stdout
    assert read_progress(urgent)["resumed_from_step"] >= 20, cli(site, "logs", urgent).stdout
    assert sorted(r["run_id"] for r in ledger.runs()) == sorted([low, capped, urgent])
    for job_id, row in final.items():  # charged = slot-seconds held x the catalog's price
        assert recomputed_usd(ledger, job_id) == pytest.approx(row["spent_usd"], rel=1e-6)

    report = subprocess.run([sys.executable, "-m", "costsched.cli.main", "report", "--ledger",
                             str(site["root"] / "ledger.db"), "--format", "json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert report.returncode == 0, report.stderr
    assert {r["run_id"] for r in json.loads(report.stdout)} == {low, capped, urgent}

    # The scheduler's metrics are on Ray's Prometheus endpoint; an ended job's series
    # leave it (every job here has ended).
    metrics = _wait("the scheduler's metrics on Ray's Prometheus endpoint, without the "
                    "ended jobs' series",
                    lambda: (text := _scrape(site, "ray_costsched_queue_length"))
                    and f'job_id="{urgent}"' not in text and text, 90, poll_s=3.0)
    assert "ray_costsched_slots_allocated" in metrics


def user_folder(site: dict[str, Any]) -> Path:
    """A folder of user code outside the package, on no import path."""
    folder = site["root"] / "usercode"
    folder.mkdir(exist_ok=True)
    (folder / "userloop.py").write_text(USER_CODE.read_text())
    return folder


def placement_groups() -> list[tuple[str, str, list]]:
    """Every placement group of the cluster: (id, state, bundles), for a failure's detail."""
    from ray.util import placement_group_table

    return [(pg_id[:8], info["state"], list(info["bundles"].values()))
            for pg_id, info in placement_group_table().items()]


def json_logs(site: dict[str, Any], job_id: str) -> list[dict[str, Any]]:
    handle = ray.get_actor(SERVICE_NAME, namespace=NAMESPACE)
    return ray.get(handle.logs.remote(job_id))["events"]


def _scrape(site: dict[str, Any], name: str) -> str:
    port = site["cluster"].head_node.metrics_export_port
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    except OSError:
        return ""
    text = text.decode()
    return text if name in text else ""


USER_CODE = REPO / "tests" / "support" / "userloop.py"


def user_job(folder: Path, name: str, entrypoint: str, *, workers: int, max_failures: int = 3,
             priority: int = 0) -> Path:
    data = {"name": name, "entrypoint": entrypoint,
            "entrypoint_config": {"steps": 100, "step_s": 0.15},
            "training": {"num_epochs": 1, "global_batch_size": 8},
            "scaling": {"min_workers": workers, "max_workers": workers,
                        "accelerator_resource": "cpu_slot", "use_gpu": False},
            "checkpoint": {"interval_steps": 10, "max_failures": max_failures},
            "cost": {"instance_type": "local-cpu", "budget_usd": 1.0, "priority": priority}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def submit_with_working_dir(site: dict[str, Any], folder: Path, job_yaml: str) -> str:
    """``ray job submit --working-dir FOLDER -- costsched submit JOB`` as a user would."""
    done = ray_job_submit(site, folder, sys.executable, "-m", "costsched.cli.main", "submit",
                          job_yaml)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    name = yaml.safe_load((folder / job_yaml).read_text())["name"]
    ids = re.findall(rf"^({re.escape(name)}-\d+)\s*$", done.stdout, flags=re.MULTILINE)
    assert ids, done.stdout[-2000:]  # the job id `costsched submit` printed, in the job's log
    return ids[-1]


def test_a_user_entrypoint_shipped_with_ray_job_submit_is_preempted_and_resumes(site):
    started_scheduler(site)
    folder = user_folder(site)
    user_job(folder, "userjob", "userloop:train_loop", workers=2)
    job_id = submit_with_working_dir(site, folder, "userjob.yaml")
    assert job_id.startswith("userjob-"), job_id
    _wait("the user's job to checkpoint", lambda: step(site, job_id) >= 10, 480,
          detail=lambda: rows())
    urgent = cli(site, "submit", job_file(site, "urgent2", workers=2, epochs=1,
                                          priority=10)).stdout.strip()
    _wait("the urgent job to preempt the user's job",
          lambda: rows()[job_id]["state"] == "PREEMPTED", 120, detail=lambda: rows())
    preempted_at = step(site, job_id)
    # The urgent job is cancelled (running or still starting): its slots go back to the
    # preempted job, which resumes at once.
    cancelled = cli(site, "cancel", urgent)
    assert cancelled.returncode == 0, cancelled.stderr
    _wait("both jobs to end", lambda: all(rows()[j]["state"] in TERMINAL
                                          for j in (job_id, urgent)),
          400, poll_s=2.0, detail=lambda: rows())
    final = rows()
    assert final[urgent]["state"] == "CANCELLED", cli(site, "logs", urgent).stdout
    assert final[job_id]["state"] == "COMPLETED", cli(site, "logs", job_id).stdout
    assert final[job_id]["preemptions"] == 1
    progress = read_progress(job_id)
    assert progress["global_step"] == 100
    assert progress["resumed_from_step"] >= max(preempted_at, 10)  # from its checkpoint
    ledger = Ledger(site["root"] / "ledger.db", load_catalog())
    assert recomputed_usd(ledger, job_id) == pytest.approx(final[job_id]["spent_usd"], rel=1e-6)
    assert len(ledger.intervals(job_id)) >= 2  # before and after the preemption


def test_bad_input_is_a_one_line_error_and_changes_nothing(site):
    # After the user-entrypoint test: its jobs have ended (run alone, none has).
    started_scheduler(site)
    before = rows()
    finished = next((j for j, r in before.items() if r["state"] in TERMINAL), None)
    bad = site["root"] / "bad.yaml"
    bad.write_text("name: bad\nmodle: {}\n")
    cases = [
        *([(("cancel", finished), 1, "already ended")] if finished else []),
        (("cancel", "no-such-job"), 1, "unknown job id"),
        (("logs", "no-such-job"), 1, "unknown job id"),
        (("submit", str(bad)), 2, "did you mean `model`"),
        (("submit", str(site["root"] / "missing.yaml")), 2, "no such config file"),
    ]
    for args, code, message in cases:
        result = cli(site, *args)
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr and result.stderr.strip().count("\n") == 0, args
    assert rows() == before


def test_submit_sends_the_dry_runs_forecast_and_the_scheduler_keeps_it(site):
    """What `costsched submit` reads from the config's own ledger reaches the scheduler's
    ledger, under the submitted config's hash, and the run's driver makes the run's
    launch forecast from it."""
    started_scheduler(site)
    path = job_file(site, "planned", workers=2, epochs=1)
    data = yaml.safe_load(Path(path).read_text())
    data["ledger_path"] = str(site["root"] / "own-ledger.db")
    Path(path).write_text(yaml.safe_dump(data))
    job, catalog = load_job_config(path, load_catalog()), load_catalog()
    profile = RunProfile(num_workers=2, start_up_s=20.0, step_s=0.01, epoch_overhead_s=1.0,
                         tail_s=2.0, profiled_s=30.0)
    forecast = forecast_from_profile(profile, rate=rate_of_job(job, catalog), num_epochs=1,
                                     steps_per_epoch=10)
    record_plan_forecast(Ledger(site["root"] / "own-ledger.db", catalog), job, forecast,
                         now=time.time(), detail=dataclasses.asdict(profile))
    submitted = cli(site, "submit", path, "--budget-usd", "0.5")  # an override: a new hash
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert "forecast: " in submitted.stderr and "at 2 workers" in submitted.stderr
    ledger = Ledger(site["root"] / "ledger.db", catalog)
    # Its run's driver makes the launch forecast from it as the run starts.
    launched = _wait("the run's launch forecast",
                     lambda: [f for f in ledger.forecasts(job_id) if f["source"] == "profile"],
                     300, detail=lambda: rows())
    assert len(launched) == 1 and launched[0]["detail"]["num_workers"] == 2
    cancelled = cli(site, "cancel", job_id)  # it need not train further
    assert cancelled.returncode == 0, cancelled.stderr
    with sqlite3.connect(site["root"] / "scheduler.db") as db:
        submitted_hash = db.execute("SELECT config_hash FROM jobs WHERE job_id=?",
                                    (job_id,)).fetchone()[0]
    assert submitted_hash != job.config_hash()
    kept = ledger.forecasts(config_hash=submitted_hash)
    assert len(kept) == 1
    assert kept[0]["seconds_to_end"] == pytest.approx(forecast.seconds_to_end)
    assert kept[0]["detail"][PROFILED_CONFIG_KEY] == job.config_hash()
    _wait("the job to end", lambda: rows()[job_id]["state"] in TERMINAL, 300,
          detail=lambda: rows())


@pytest.mark.extended  # a failed run frees its slots: also test_orphans_ray (completed, failed)
def test_a_user_entrypoint_that_raises_fails_frees_its_slots_and_blocks_nothing(site):
    started_scheduler(site)
    folder = user_folder(site)
    user_job(folder, "broken", "userloop:broken", workers=2, max_failures=0, priority=5)
    broken = submit_with_working_dir(site, folder, "broken.yaml")
    follower = cli(site, "submit", job_file(site, "follower", workers=3, epochs=1)).stdout.strip()
    _wait("both jobs to end", lambda: all(rows()[j]["state"] in TERMINAL
                                          for j in (broken, follower)),
          400, poll_s=2.0, detail=lambda: (rows(), placement_groups()))
    final = rows()
    assert final[broken]["state"] == "FAILED" and final[broken]["workers"] == 0
    assert final[follower]["state"] == "COMPLETED"  # it needed every slot, the broken's too
    logs = cli(site, "logs", broken).stdout
    assert "user bug: no training data at /nowhere" in logs
    assert "userloop.py" in logs  # the user's traceback, not only a message


@pytest.mark.extended  # a restarted scheduler: also test_scheduler_controller.py (readopts runs)
def test_a_killed_scheduler_restarts_and_its_job_finishes_once(site):
    started_scheduler(site)
    job_id = cli(site, "submit", job_file(site, "survivor", workers=2, epochs=8)).stdout.strip()
    _wait("the job to checkpoint", lambda: step(site, job_id) >= 10, 180, detail=lambda: rows())
    ray.kill(ray.get_actor(SERVICE_NAME, namespace=NAMESPACE), no_restart=False)

    status = _wait("the restarted scheduler to answer `costsched status`",
                   lambda: (r := cli(site, "status")).returncode == 0 and r.stdout, 120)
    assert job_id in status
    _wait("the job to end", lambda: rows()[job_id]["state"] in TERMINAL, 300, poll_s=2.0,
          detail=lambda: rows())
    row = rows()[job_id]
    assert row["state"] == "COMPLETED"
    assert row["restarts"] == 0  # reattached to its running driver, not restarted
    assert "adopted" in [e["kind"] for e in json_logs(site, job_id)]
    runs = [r for r in Ledger(site["root"] / "ledger.db", load_catalog()).runs()
            if r["run_id"] == job_id]
    assert len(runs) == 1 and runs[0]["outcome"] == "COMPLETED"
