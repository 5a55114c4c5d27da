"""One job on one node type costs the same dollars to the dry run, the training loop,
the live controller and the cost-aware policy's budget cut.

The expected price is read straight from the shipped catalog YAML (node price /
accelerators per node), not through costsched's price code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from costsched.config.bundled import default_catalog_path
from costsched.config.job import parse_job
from costsched.config.scheduler import SchedulerConfig
from costsched.cost.estimate import make_plan
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import ClusterSnapshot
from costsched.scheduler.controller import SchedulerController
from costsched.scheduler.interfaces import NodeRecord
from costsched.scheduler.policy_view import job_view
from costsched.scheduler.state import JobStore
from costsched.training.data import prepare
from costsched.training.run import Run, RunSpec
from tests.conftest import quickstart_dict
from tests.support.policy_fakes import nodes
from tests.test_scheduler_fakes import FakeClock, FakeCluster, FakeRunner
from tests.test_training_core import FakeClock as LoopClock
from tests.test_training_core import FakeSession

TYPE = "g4dn.12xlarge"
WORKERS = 2


def catalog_usd_per_accelerator_hour(instance_type: str) -> float:
    row = yaml.safe_load(default_catalog_path().read_text())["instance_types"][instance_type]
    return row["on_demand_usd_per_hour"] / row["num_gpus_per_node"]


@pytest.fixture(scope="module")
def job_data() -> dict:
    data = quickstart_dict()
    data["dataset"] = {"name": "digits"}
    data["model"] = {"kind": "mlp", "widths": [16]}
    data["cost"] = {"instance_type": TYPE, "spot": False, "budget_usd": 50.0}
    data["scaling"].update(min_workers=WORKERS, max_workers=WORKERS, accelerators_per_worker=1)
    return data


@pytest.fixture(scope="module")
def expected_usd_per_hour() -> float:
    return catalog_usd_per_accelerator_hour(TYPE) * WORKERS


def test_the_dry_run_prices_the_job_at_its_catalog_row(job_data, expected_usd_per_hour):
    job = parse_job(job_data, "price test")
    plan = make_plan(job, prepare(job.dataset), load_catalog())
    assert plan.usd_per_hour == pytest.approx(expected_usd_per_hour, rel=1e-12)
    assert plan.estimated_usd == pytest.approx(expected_usd_per_hour * plan.estimated_hours)


def test_the_training_loop_charges_the_same_per_worker_second(job_data, tmp_path):
    job = parse_job(job_data, "price test")
    splits = prepare(job.dataset)
    clock = LoopClock()
    spec = RunSpec(job=job, rate=rate_of_job(job, load_catalog()), run_started_at=clock())
    run = Run(spec, FakeSession(splits.x_train, splits.y_train, clock, tmp_path), clock=clock)
    clock.advance(900.0)
    # FakeSession is one worker: a quarter of an hour of one worker's accelerator.
    one_worker = catalog_usd_per_accelerator_hour(TYPE)
    assert run.cost_usd() == pytest.approx(one_worker * 900.0 / 3600.0, rel=1e-12)


def live_controller(job_data: dict, tmp_path: Path) -> tuple[SchedulerController, FakeClock]:
    clock = FakeClock()
    cluster = FakeCluster(NodeRecord(node_id="n0", node_type=TYPE, gpu_model="T4",
                                     total_slots=4, free_slots=4, usd_per_hour=3.912))
    controller = SchedulerController(
        store=JobStore(tmp_path / "s.db"), policy=CostAwarePolicy(), cluster=cluster,
        runner=FakeRunner(clock, usd_per_gpu_hour=0.0), clock=clock, catalog=load_catalog(),
        config=SchedulerConfig(state_path=str(tmp_path / "s.db"),
                               accelerator_resource=job_data["scaling"]["accelerator_resource"]))
    return controller, clock


def test_the_controller_shows_and_counts_the_same_rate(job_data, tmp_path,
                                                       expected_usd_per_hour):
    controller, clock = live_controller(job_data, tmp_path)
    job_id = controller.submit(yaml.safe_dump(job_data))
    clock.advance(60.0)
    controller.tick()
    row = next(r for r in controller.status() if r.job_id == job_id)
    assert (row.state, row.workers) == ("RUNNING", WORKERS)
    assert row.usd_per_hour == pytest.approx(expected_usd_per_hour, rel=1e-12)
    clock.advance(600.0)  # no round in between: the spend still moves
    row = next(r for r in controller.status() if r.job_id == job_id)
    assert row.spent_usd == pytest.approx(expected_usd_per_hour * 600.0 / 3600.0, rel=1e-9)


def test_the_policy_cuts_a_budget_at_the_jobs_own_price(job_data, tmp_path):
    controller, _ = live_controller(job_data, tmp_path)
    record = controller.store.get(controller.submit(yaml.safe_dump(job_data)))
    job = parse_job(job_data, "price test")
    round_s = 60.0
    one_gpu_round = catalog_usd_per_accelerator_hour(TYPE) * round_s / 3600.0
    record = dataclasses.replace(record, min_workers=1, max_workers=4,
                                 budget_usd=2.5 * one_gpu_round)
    view = job_view(record, job, 0.05, rate_of_job(job, load_catalog()), elastic=True)
    assert view.usd_per_gpu_hour == pytest.approx(catalog_usd_per_accelerator_hour(TYPE))
    # Nodes forty times dearer than the job's type: judged at the cluster's average price
    # the budget would buy no GPU; at the job's own price it buys two GPUs for a round.
    snapshot = ClusterSnapshot(time_s=0.0, round_index=0, jobs=(view,),
                               nodes=nodes(1, gpus=4, usd_per_hour=40 * 3.912),
                               placements={}, round_s=round_s, restart_s=30.0)
    decision = CostAwarePolicy().decide(snapshot)
    assert sum(decision.placements[record.job_id].values()) == 2
