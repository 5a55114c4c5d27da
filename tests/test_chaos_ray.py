"""Chaos: worker kills and node removals across concurrent jobs, on a loaded machine.

A ``ray.cluster_utils.Cluster`` (a head and four one-slot nodes) runs the live
scheduler's controller here (fifo, real cluster client and job runner) over three
1-worker jobs, with a CPU-burning process beside them (bounded: it stops itself).
While they train, the test SIGKILLs a Train worker of a job that has checkpointed
since its last restart, ten times, and removes the node of a running job twice
(adding a fresh node each time). Then it checks what a user would:

- every job reaches COMPLETED, once (one ``finished`` event), and no job is lost
  or duplicated (three jobs, three ledger runs, no driver actor left);
- each restart resumed at most one checkpoint interval behind the furthest step
  the job had reported;
- every job's spend is within its budget, and the ledger's charge per job equals
  one recomputed from its intervals and the catalog read as plain YAML.

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

from ray.cluster_utils import Cluster  # noqa: E402

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

pytestmark = [pytest.mark.ray, pytest.mark.chaos, pytest.mark.timeout(3600)]

INTERVAL = 5
KILLS, NODE_REMOVALS = 10, 2
BURN_S = 900  # the burner's own bound; it is also killed when the test ends


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(4):
        cluster.add_node(num_cpus=1, resources={"cpu_slot": 1})
    ray.init(address=cluster.address, logging_level="WARNING")
    burner = subprocess.Popen([sys.executable, "-c", (
        f"import time\nend = time.time() + {BURN_S}\nwhile time.time() < end: pass")])
    yield cluster
    burner.kill()
    ray.shutdown()
    cluster.shutdown()


def _job_yaml(name: str) -> str:
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = 3000
    data["training"].update(num_epochs=30, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=1)
    data["checkpoint"].update(interval_steps=INTERVAL, max_failures=-1)
    data["cost"].update(budget_usd=2.0)
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


def test_kills_and_node_losses_leave_every_job_completed_once_and_charged_right(
        cluster, tmp_path):
    catalog = load_catalog()
    config = SchedulerConfig(policy="fifo", round_s=1.0, accelerator_resource="cpu_slot",
                             state_path=str(tmp_path / "scheduler.db"), stop_grace_s=60.0,
                             ledger_path=str(tmp_path / "ledger.db"),
                             storage_path=str(tmp_path / "runs"))
    controller = SchedulerController.from_config(
        config, cluster=RayClusterClient("cpu_slot", catalog),
        runner=RayJobRunner(catalog, config.ledger_path, config.storage_path,
                            stop_grace_s=60.0),
        clock=SystemClock())
    jobs = [controller.submit(_job_yaml(f"chaos{i}")) for i in range(3)]
    tracker, rng = Tracker(jobs), random.Random(7)
    kills, removals, events = 0, 0, []
    here = ray.get_runtime_context().get_node_id()
    deadline = time.monotonic() + 1500

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
                cluster.add_node(num_cpus=1, resources={"cpu_slot": 1})
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
        assert record.state == "COMPLETED", controller.logs(job)
        assert [e["kind"] for e in controller.logs(job)].count("finished") == 1
        assert all(loss <= INTERVAL for loss in tracker.losses[job]), (job, tracker.losses)
        charged = ledger.run_cost_usd(job)
        assert charged == pytest.approx(recomputed_usd(ledger, job), rel=1e-6)
        assert charged <= record.budget_usd
    # Every fault restarted its job, unless it struck after the job's last report (the
    # run had nothing left to lose and ended COMPLETED all the same).
    for kind, victim, at_step, attempt in events:
        later = tracker.attempts[victim][tracker.attempts[victim].index(attempt) + 1:]
        assert later or tracker.furthest[victim] == at_step, (kind, victim, at_step, events)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    assert not [n for n in names if n.startswith(DRIVER_PREFIX)]
