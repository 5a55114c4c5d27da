"""Fakes shared by the scheduler tests (no tests here): a scripted clock, cluster, runner."""

from __future__ import annotations

import copy
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from costsched.config.scheduler import AutoscalingSection, SchedulerConfig
from costsched.cost.prices import InstanceType, PriceCatalog
from costsched.policy.registry import make_policy
from costsched.scheduler.controller import SchedulerController
from costsched.scheduler.interfaces import JobProgress, NodeRecord, RunHandle
from costsched.scheduler.state import JobStore

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _type(gpus: int, on_demand: float, spot: float) -> InstanceType:
    return InstanceType(gpu_model="A10G", num_gpus_per_node=gpus, num_vcpus=8 * gpus,
                        memory_gib=32.0 * gpus, on_demand_usd_per_hour=on_demand,
                        spot_usd_per_hour=spot, gpu_power_w=300)


# Per GPU-hour: one $1.00 / $0.20 spot; four $0.80 / $0.25 spot; eight $1.25 / $0.50 spot.
CATALOG = PriceCatalog(region="test", prices_taken_on="2026-11-24", storage_usd_per_gb_month=0.0,
                       instance_types={"one": _type(1, 1.0, 0.2), "four": _type(4, 3.2, 1.0),
                                       "eight": _type(8, 10.0, 4.0)})


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeCluster:
    def __init__(self, *nodes: NodeRecord):
        self.node_list = list(nodes)
        self.requests: list[tuple] = []
        self.clears = 0

    def nodes(self) -> list[NodeRecord]:
        return list(self.node_list)

    def request_resources(self, bundles) -> None:
        self.requests.append(tuple(bundles))

    def clear_resource_request(self) -> None:
        self.clears += 1

    def kill(self, node_id: str) -> None:
        self.node_list = [NodeRecord(**{**n.__dict__, "alive": False})
                          if n.node_id == node_id else n for n in self.node_list]


def node(node_id: str, slots: int = 1, usd_per_hour: float = 1.0) -> NodeRecord:
    return NodeRecord(node_id=node_id, node_type="one", gpu_model="A10G", total_slots=slots,
                      free_slots=slots, usd_per_hour=usd_per_hour)


@dataclass
class FakeRunner:
    """Runs spend ``usd_per_hour`` of their workers' catalog price while alive and
    step once per poll, each poll from the attempt begun at the last start or resize;
    ``script`` overrides the next poll of a job."""

    clock: FakeClock
    usd_per_gpu_hour: float = 0.8
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: dict[str, float] = field(default_factory=dict)
    script: dict[str, JobProgress] = field(default_factory=dict)
    calls: list[tuple] = field(default_factory=list)
    batch_sizes: dict[str, int | None] = field(default_factory=dict)
    """The batch size each job was last started or resized at (None: its config's)."""

    def start(self, job_id, config, num_workers, placement, batch_size=None):
        self.calls.append(("start", job_id, num_workers))
        self.batch_sizes[job_id] = batch_size
        self.runs[job_id] = {"workers": num_workers, "since": self.clock.now(), "step": 0,
                             "attempt": self.clock.now()}
        return RunHandle(run_id=f"run-{job_id}", checkpoint_path=f"/ckpt/{job_id}")

    def resize(self, job_id, num_workers, placement, batch_size=None):
        self.calls.append(("resize", job_id, num_workers))
        self.batch_sizes[job_id] = batch_size
        self._settle(job_id)
        self.runs[job_id].update(workers=num_workers, attempt=self.clock.now())

    def stop(self, job_id, reason):
        self.calls.append(("stop", job_id, reason))
        if job_id in self.runs:
            self._settle(job_id)
            del self.runs[job_id]

    def advance(self):
        return []  # a fake stop ends at once

    def _settle(self, job_id: str) -> None:
        run = self.runs[job_id]
        now = self.clock.now()
        self.spent[job_id] = (self.spent.get(job_id, 0.0) + run["workers"]
                              * self.usd_per_gpu_hour * (now - run["since"]) / 3600.0)
        run["since"] = now

    def poll(self, job_id):
        if job_id in self.script:
            progress = self.script.pop(job_id)
            if progress.state != "running":
                self.runs.pop(job_id, None)
            return progress
        if job_id not in self.runs:
            return JobProgress(state="lost")
        self._settle(job_id)
        self.runs[job_id]["step"] += 1
        # As the Ray runner does: the rate it bills at, that of the nodes it runs on.
        return JobProgress(state="running", spent_usd=self.spent[job_id],
                           last_step=self.runs[job_id]["step"], last_step_at=self.clock.now(),
                           usd_per_hour=self.runs[job_id]["workers"] * self.usd_per_gpu_hour,
                           attempt_at=self.runs[job_id]["attempt"])

    def kinds(self, job_id: str) -> list[str]:
        return [c[0] if c[0] != "stop" else f"stop:{c[2]}" for c in self.calls if c[1] == job_id]


def job_text(name: str = "job", *, priority: int = 0, budget_usd: float = 100.0,
             min_workers: int = 1, max_workers: int = 1, accelerators_per_worker: float = 1,
             spot: bool = False, max_failures: int = 3, **extra: Any) -> str:
    data = copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))
    data["name"] = name
    data["scaling"] = {"min_workers": min_workers, "max_workers": max_workers,
                       "accelerator_resource": "GPU", "use_gpu": True,
                       "accelerators_per_worker": accelerators_per_worker}
    data["cost"] = {"instance_type": "four", "budget_usd": budget_usd, "priority": priority,
                    "spot": spot}
    data["checkpoint"]["max_failures"] = max_failures
    data.update(extra)
    return yaml.safe_dump(data)


@dataclass
class Harness:
    """A controller over fakes and a real SQLite file."""

    path: Path
    clock: FakeClock
    cluster: FakeCluster
    runner: FakeRunner
    controller: SchedulerController

    def state(self, job_id: str) -> str:
        return self.controller.store.get(job_id).state

    def job(self, job_id: str):
        return self.controller.store.get(job_id)

    def tick(self, seconds: float = 60.0):
        self.clock.advance(seconds)
        return self.controller.tick()


def make_controller(path: Path, clock: FakeClock, cluster: FakeCluster, runner: FakeRunner,
                    policy: str = "cost-aware", **config: Any) -> SchedulerController:
    autoscaling = config.pop("autoscaling", AutoscalingSection())
    return SchedulerController(
        store=JobStore(path), policy=make_policy(policy), cluster=cluster, runner=runner,
        clock=clock, catalog=CATALOG,
        config=SchedulerConfig(policy=policy, state_path=str(path), autoscaling=autoscaling,
                               **config))


def harness(tmp_path: Path, *nodes: NodeRecord, policy: str = "cost-aware",
            **config: Any) -> Harness:
    clock = FakeClock()
    cluster = FakeCluster(*nodes)
    runner = FakeRunner(clock)
    path = tmp_path / "scheduler.db"
    return Harness(path, clock, cluster, runner,
                   make_controller(path, clock, cluster, runner, policy, **config))


def dump(path: Path) -> tuple[list[tuple], list[tuple]]:
    """Every row of both tables, to compare the database before and after."""
    db = sqlite3.connect(path)
    try:
        return (db.execute("SELECT * FROM jobs ORDER BY seq").fetchall(),
                db.execute("SELECT * FROM events ORDER BY event_id").fetchall())
    finally:
        db.close()
