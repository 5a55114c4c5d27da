"""Chaos: worker kills and node removals across concurrent jobs, on a loaded machine.

A ``ray.cluster_utils.Cluster`` (a head and four one-slot nodes, each with its own temp
folder; nodes added later get theirs) runs the live scheduler's controller here (fifo,
real cluster client and job runner) over three 1-worker jobs whose checkpoints go to a
local S3-compatible server (``moto``), so a restart on another node can only resume
from the bucket, with a CPU-burning process beside them (bounded: it stops itself).
One job's budget is too small to finish.
While they train, the test SIGKILLs a Train worker of a job that has checkpointed
since its last restart, ten times, and removes the node of a running job twice
(adding a fresh node each time). Then it checks what a user would:

- every job reaches its right end, once (one ``finished`` or ``budget`` event): two
  COMPLETED, the one with the small budget BUDGET_EXHAUSTED; no job is lost or
  duplicated (three jobs, three ledger runs, no driver actor left);
- each restart resumed at most one checkpoint interval behind the furthest step
  the job had reported;
- every job's spend is within its budget (the small one spent more than half of
  it: the budget bound), and the ledger's charge per job equals one recomputed from
  its intervals and the catalog read as plain YAML;
- the checkpoints of every job that reported are in the bucket.

Not in the default run (each of its twelve restarts takes tens of seconds on two
cores with a burner beside it): ``pytest -m chaos tests/test_chaos_ray.py``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.config.scheduler import SchedulerConfig  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer import channel  # noqa: E402
from costsched.ray_layer.ledger import ledger_for  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.names import DRIVER_PREFIX  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from costsched.scheduler.state import TERMINAL  # noqa: E402
from costsched.training.state import checkpoint_sequence  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.faults import train_workers_by_node  # noqa: E402
from tests.support.nodes import cluster_without_shared_disk  # noqa: E402
from tests.support.s3 import keys  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.chaos, pytest.mark.timeout(3600)]

INTERVAL = 5
KILLS, NODE_REMOVALS = 10, 2
DEADLINE_S = 2400.0
BURN_S = DEADLINE_S + 300  # the burner's own bound; it is also killed when the test ends
BUCKET = "costsched-chaos"
SMALL_BUDGET_USD = 0.006
"""About 8 minutes of one worker at the local-cpu price: less than a job needs to
finish here (about 16 minutes). Under this load a run may take over 3 minutes to its
first report (a $0.003 budget ran out before it, in one run of this test)."""


@pytest.fixture(scope="module")
def cluster():
    slots = [{"cpu_slot": 1}] * 4
    with cluster_without_shared_disk(BUCKET, slots) as (cluster, temp):
        burner = subprocess.Popen([sys.executable, "-c", (
            f"import time\nend = time.time() + {BURN_S}\nwhile time.time() < end: pass")])
        cluster.temp_root = temp
        try:
            yield cluster
        finally:
            burner.kill()


def _job_yaml(name: str, budget_usd: float = 2.0) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=30, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=1)
    data["checkpoint"].update(interval_steps=INTERVAL, max_failures=-1)
    data["cost"].update(budget_usd=budget_usd)
    return yaml.safe_dump(data, sort_keys=False)


class Tracker:
    """Each job's furthest reported step, and the loss at each restart it made."""

    def __init__(self, jobs: list[str]):
        self.furthest = dict.fromkeys(jobs, 0)
        self.attempt = dict.fromkeys(jobs, None)
        self.attempts: dict[str, list[float]] = {j: [] for j in jobs}
        self.losses: dict[str, list[int]] = {j: [] for j in jobs}
        self.checkpoint = dict.fromkeys(jobs, -1)

    def observe(self) -> None:
        for job in self.furthest:
            p = channel.progress(job) or {}
            attempt = p.get("attempt_started_at")
            if attempt is not None and attempt != self.attempt[job]:
                if self.attempt[job] is not None:  # a restart: how far behind it resumed
                    self.losses[job].append(
                        self.furthest[job] - max(int(p.get("resumed_from_step", 0)), 0))
                self.attempt[job] = attempt
                self.attempts[job].append(attempt)
            self.furthest[job] = max(self.furthest[job], int(p.get("global_step", 0)))

    def checkpointed_since_restart(self, job: str) -> bool:
        sequence = checkpoint_sequence(channel.noted_checkpoint(job))
        p = channel.progress(job) or {}
        fresh = sequence > self.checkpoint[job] and \
            int(p.get("global_step", 0)) > max(int(p.get("resumed_from_step", 0)), 0)
        return fresh


def test_kills_and_node_losses_end_every_job_right_once_and_charge_it_right(
        cluster, tmp_path):
    catalog = load_catalog()
    config = SchedulerConfig(policy="fifo", round_s=1.0, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"), stop_grace_s=60.0,
                             ledger_path=str(tmp_path / "ledger.db"),
                             storage_path=f"s3://{BUCKET}/runs")
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, config.ledger_path, config.storage_path,
                            stop_grace_s=60.0),
        clock=SystemClock())
    jobs = [controller.submit(_job_yaml(f"chaos{i}")) for i in range(2)]
    small = controller.submit(_job_yaml("chaos-small", SMALL_BUDGET_USD))
    jobs.append(small)
    tracker, rng = Tracker(jobs), random.Random(7)
    kills, removals, events = 0, 0, []
    here = ray.get_runtime_context().get_node_id()
    deadline = time.monotonic() + DEADLINE_S
    added = 0

    while not all(controller.store.get(j).state in TERMINAL for j in jobs):
        assert time.monotonic() < deadline, (events, [controller.logs(j) for j in jobs])
        controller.tick()
        tracker.observe()
        running = [j for j in jobs if controller.store.get(j).state == "RUNNING"
                   and tracker.checkpointed_since_restart(j)]
        if running and (kills < KILLS or removals < NODE_REMOVALS):
            victim = rng.choice(running)
            node = next(iter(controller.store.get(victim).placement))
            # Every fourth fault (twice) removes the victim's node instead of a worker.
            if removals < NODE_REMOVALS and kills >= 4 * (removals + 1) and node != here:
                gone = next(n for n in cluster.worker_nodes if n.node_id == node)
                cluster.remove_node(gone)
                added += 1
                cluster.add_node(num_cpus=1, resources={"cpu_slot": 1},
                                 temp_dir=str(cluster.temp_root / f"added{added}"))
                removals += 1
                events.append(("node", victim, tracker.furthest[victim],
                               tracker.attempt[victim]))
            elif kills < KILLS and (pids := train_workers_by_node().get(node)):
                os.kill(pids[0], signal.SIGKILL)
                kills += 1
                events.append(("kill", victim, tracker.furthest[victim],
                               tracker.attempt[victim]))
            else:
                continue
            tracker.checkpoint[victim] = checkpoint_sequence(channel.noted_checkpoint(victim))
        time.sleep(0.5)
    tracker.observe()

    assert (kills, removals) == (KILLS, NODE_REMOVALS), events
    ledger = ledger_for(config.ledger_path, catalog)
    assert sorted(r["run_id"] for r in ledger.runs()) == sorted(jobs)
    for job in jobs:
        record = controller.store.get(job)
        kinds = [e["kind"] for e in controller.logs(job)]
        if job == small:
            assert record.state == "BUDGET_EXHAUSTED", controller.logs(job)
            assert kinds.count("budget") + kinds.count("finished") == 1, kinds
        else:
            assert record.state == "COMPLETED", controller.logs(job)
            assert kinds.count("finished") == 1, kinds
        assert all(loss <= INTERVAL for loss in tracker.losses[job]), (job, tracker.losses)
        charged = ledger.run_cost_usd(job)
        assert charged == pytest.approx(recomputed_usd(ledger, job), rel=1e-6)
        assert charged <= record.budget_usd
        if job != small or any(i["outcome"] != "FAILED" for i in ledger.intervals(job)):
            # It reported (checkpoints come with reports): they are in the bucket.
            assert [k for k in keys(BUCKET, f"runs/{job}/") if "checkpoint_" in k], job
    assert ledger.run_cost_usd(small) > 0.5 * SMALL_BUDGET_USD
    # Every fault restarted its job, unless it struck after the job's last report (the
    # run had nothing left to lose and ended COMPLETED all the same).
    for kind, victim, at_step, attempt in events:
        later = tracker.attempts[victim][tracker.attempts[victim].index(attempt) + 1:]
        assert later or tracker.furthest[victim] == at_step, (kind, victim, at_step, events)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in names if n.startswith(DRIVER_PREFIX)]
