"""Measured models make better decisions: the third of 3 GPUs goes to the job that scales.

Two fixed-batch jobs measured on T4 GPUs (Pollux artifact, ``placements.csv``): ncf at
global batch 4096, whose second GPU adds more all-reduce than it saves compute (its
step gets slower), and imagenet at 200, whose compute splits almost linearly. The
fixtures in ``tests/fixtures/measured_decisions/`` hold their steps on 1 and 2 GPUs of
one node, what a live job has measured after running at 1 and 2 workers (written by
``bench/better_decisions.py --write-fixtures``). They are recorded through
:class:`JobModels` in a real SQLite file, and the cost-aware policy decides on a
snapshot built as the live controller builds it (``job_view``, catalog prices, 1..3
one-GPU workers each, one node of 3 slots). ``bench/better_decisions.py`` prints what
each decision is worth.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from costsched.config.job import parse_job
from costsched.config.scheduler import SchedulerConfig
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.goodput.profile import read_placements
from costsched.goodput.throughput import ThroughputPoint
from costsched.policy.drive import Executes, drive
from costsched.policy.registry import make_policy
from costsched.policy.snapshot import num_gpus
from costsched.scheduler.interfaces import NodeRecord
from costsched.scheduler.job_models import JobModels, Measurement
from costsched.scheduler.policy_view import build_snapshot, job_view, node_views
from costsched.scheduler.state import JobStore
from tests.conftest import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "measured_decisions"
GLOBAL_BATCH = {"ncf": 4096, "imagenet": 200}
CATALOG = load_catalog(REPO / "configs" / "prices.yaml")
INSTANCE_TYPE = "g4dn.12xlarge"  # 4 x T4, what the measurements ran on
SLOTS = 3


def recorded(app: str) -> list[ThroughputPoint]:
    return read_placements(pd.read_csv(FIXTURES / f"{app}.csv", comment="#"))


def job_text(name: str, app: str) -> str:
    data = copy.deepcopy(yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text()))
    data["name"] = name
    data["training"]["global_batch_size"] = GLOBAL_BATCH[app]
    data["scaling"] = {"min_workers": 1, "max_workers": 3, "use_gpu": True,
                       "accelerator_resource": "GPU", "accelerators_per_worker": 1}
    data["cost"] = {"instance_type": INSTANCE_TYPE, "budget_usd": 1000.0}
    return yaml.safe_dump(data)


def gpus_per_job(tmp_path: Path, apps: dict[str, str], *, measured: bool) -> dict[str, int]:
    """One cost-aware round over jobs named as ``apps``' keys (submitted in that order),
    each carrying the measurements of its app; GPUs per job name."""
    path, scheduler = tmp_path / "scheduler.db", SchedulerConfig()
    store, records, configs = JobStore(path), {}, {}
    for arrival, (name, app) in enumerate(apps.items()):
        text = job_text(name, app)
        configs[name] = parse_job(yaml.safe_load(text), f"job {name}", CATALOG)
        records[name] = store.add_job(name=name, config_yaml=text,
                                      config_hash=configs[name].config_hash(), priority=0,
                                      budget_usd=1000.0, min_workers=1, max_workers=3,
                                      now=float(arrival))
        for p in recorded(app):
            JobModels(path).record(records[name].job_id, Measurement(
                num_workers=p.num_replicas, num_nodes=p.num_nodes, local_bsz=p.local_bsz,
                accum_steps=1, step_time_s=p.step_time_s, sync_time_s=p.sync_time_s,
                samples_per_s=GLOBAL_BATCH[app] / p.step_time_s), now=float(arrival))
    models = JobModels(path)  # a fresh reader: the fits come back from the file
    assert all([p.num_replicas for p in models.points(r.job_id)] == [1, 2]
               for r in records.values())
    views = [job_view(records[n], configs[n], scheduler.sync_penalty_per_gpu,
                      rate_of_job(configs[n], CATALOG), elastic=True,
                      model=models.model(records[n].job_id) if measured else None)
             for n in apps]
    usd_per_hour = rate_of_job(configs[next(iter(apps))], CATALOG).usd_per_hour(SLOTS)
    node = NodeRecord(node_id="node-0", node_type=INSTANCE_TYPE, gpu_model="T4",
                      total_slots=SLOTS, free_slots=SLOTS, usd_per_hour=usd_per_hour)
    snapshot = build_snapshot(now=10.0, round_index=0, views=views, nodes=node_views([node]),
                              placements={}, round_s=scheduler.round_s,
                              restart_s=scheduler.restart_s)
    driven = drive(make_policy("cost-aware"), snapshot, elastic=True,
                   executes=Executes(batch_sizes=False, node_changes=False))
    return {n: num_gpus(driven.decision.placements.get(records[n].job_id)) for n in apps}


def best_split_by_the_measurements() -> dict[str, int]:
    """The split of 3 slots (each job 1 or 2) with the most one-GPU equivalents of
    goodput (samples/s over the job's own on one GPU; efficiency 1 at a fixed batch);
    every split costs the same 3 slots, so it is also the most per dollar."""
    speedup = {}
    for app, points in ((app, recorded(app)) for app in GLOBAL_BATCH):
        step = {p.num_replicas: p.step_time_s for p in points}
        speedup[app] = {k: step[1] / step[k] for k in (1, 2)}
    splits = [{"ncf": 2, "imagenet": 1}, {"ncf": 1, "imagenet": 2}]
    return max(splits, key=lambda s: sum(speedup[app][k] for app, k in s.items()))


def test_the_recorded_measurements_say_the_third_gpu_belongs_to_imagenet():
    # ncf slows down on a second GPU; imagenet runs 1.8x as fast.
    assert best_split_by_the_measurements() == {"ncf": 1, "imagenet": 2}


@pytest.mark.parametrize("order", [("ncf", "imagenet"), ("imagenet", "ncf")])
def test_measured_models_give_the_third_gpu_to_the_job_that_scales(tmp_path, order):
    apps = dict(zip(("first", "second"), order, strict=True))
    by_app = {apps[name]: gpus for name, gpus in
              gpus_per_job(tmp_path, apps, measured=True).items()}
    assert by_app == best_split_by_the_measurements() == {"ncf": 1, "imagenet": 2}


@pytest.mark.parametrize("order", [("ncf", "imagenet"), ("imagenet", "ncf")])
def test_without_measurements_the_third_gpu_goes_to_whoever_came_first(tmp_path, order):
    apps = dict(zip(("first", "second"), order, strict=True))
    assert gpus_per_job(tmp_path, apps, measured=False) == {"first": 2, "second": 1}


def test_swapping_the_measurements_swaps_the_allocation(tmp_path):
    # The same two jobs (names, submission order); each job's measurements move with
    # the global batch they were taken at.
    as_recorded = gpus_per_job(tmp_path / "a", {"first": "ncf", "second": "imagenet"},
                               measured=True)
    swapped = gpus_per_job(tmp_path / "b", {"first": "imagenet", "second": "ncf"},
                           measured=True)
    assert as_recorded == {"first": 1, "second": 2}
    assert swapped == {"first": 2, "second": 1}
