"""Measured models make better decisions: the third of 3 GPUs goes to the job that scales.

Two fixed-batch jobs measured on T4 GPUs (Pollux artifact, ``placements.csv``): ncf at
global batch 4096, whose second GPU adds more all-reduce than it saves compute (its
step gets slower), and imagenet at 200, whose compute splits almost linearly. The
fixtures in ``tests/fixtures/measured_decisions/`` hold their steps on 1 and 2 GPUs of
one node, what a live job has measured after running at 1 and 2 workers (written by
``bench/better_decisions.py --write-fixtures``). They are recorded in the scheduler's
own store (a real SQLite file) and one round of the live controller, over fakes for
the cluster and the runner, decides (1..3 one-GPU workers each, one node of 3 slots).
``bench/better_decisions.py`` prints what each decision is worth.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from costsched.goodput.profile import read_placements
from costsched.goodput.throughput import ThroughputPoint
from costsched.scheduler.job_models import Measurement
from tests.test_scheduler_fakes import harness, job_text, node

FIXTURES = Path(__file__).parent / "fixtures" / "measured_decisions"
GLOBAL_BATCH = {"ncf": 4096, "imagenet": 200}
SLOTS = 3


def recorded(app: str) -> list[ThroughputPoint]:
    return read_placements(pd.read_csv(FIXTURES / f"{app}.csv", comment="#"))


def app_job(name: str, app: str) -> str:
    """A 1..3-worker job at ``app``'s global batch (the model is not what is measured)."""
    data = yaml.safe_load(job_text(name, min_workers=1, max_workers=SLOTS))
    data["training"]["global_batch_size"] = GLOBAL_BATCH[app]
    return yaml.safe_dump(data)


def gpus_per_job(tmp_path: Path, apps: dict[str, str], *, measured: bool) -> dict[str, int]:
    """One round of the live controller (cost-aware, one node of 3 slots) over jobs named
    as ``apps``' keys, submitted in that order, each carrying its app's measurements in
    the scheduler's own store; GPUs per job name."""
    h = harness(tmp_path, node("n0", slots=SLOTS))
    ids = {name: h.controller.submit(app_job(name, app)) for name, app in apps.items()}
    if measured:
        for name, app in apps.items():
            for p in recorded(app):
                h.controller.job_models.record(ids[name], Measurement(
                    num_workers=p.num_replicas, num_nodes=p.num_nodes, local_bsz=p.local_bsz,
                    accum_steps=1, step_time_s=p.step_time_s, sync_time_s=p.sync_time_s,
                    samples_per_s=GLOBAL_BATCH[app] / p.step_time_s), now=h.clock.now())
        assert all([p.num_replicas for p in h.controller.job_models.points(i)] == [1, 2]
                   for i in ids.values())
    h.tick()
    return {name: h.job(job_id).workers for name, job_id in ids.items()}


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
