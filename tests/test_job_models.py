"""Measured goodput reaches the live policy: fitted per job, kept in SQLite, used to
place workers, shown in status."""

from __future__ import annotations

import pytest

from costsched.scheduler.job_models import FixedBatchThroughput, JobModels, Measurement
from tests.test_scheduler_fakes import harness, job_text, node

GLOBAL_BATCH = 128  # the quickstart's, which job_text builds on


def measured(workers: int, step_s: float, sync_s: float, samples_per_s: float) -> Measurement:
    return Measurement(num_workers=workers, num_nodes=1, local_bsz=GLOBAL_BATCH / workers,
                       accum_steps=1, step_time_s=step_s, sync_time_s=sync_s,
                       samples_per_s=samples_per_s, grad_sqr=0.5, grad_var=32.0)


# Recorded at 1 and 2 workers: one job's compute halves on two workers and its all-reduce
# is cheap; the other's step is dominated by its all-reduce, so a second worker barely helps.
SCALES = [measured(1, 1.00, 0.00, 128.0), measured(2, 0.53, 0.03, 241.5)]
SYNC_BOUND = [measured(1, 1.00, 0.00, 128.0), measured(2, 0.96, 0.46, 133.3)]


def workers_after_a_round(tmp_path, *, record: bool) -> dict[str, int]:
    h = harness(tmp_path, node("n0", slots=3))
    sync_bound = h.controller.submit(job_text("first", min_workers=1, max_workers=2))
    scales = h.controller.submit(job_text("second", min_workers=1, max_workers=2))
    if record:
        for job_id, points in ((scales, SCALES), (sync_bound, SYNC_BOUND)):
            for m in points:
                h.controller.job_models.record(job_id, m, now=h.clock.now())
    h.tick()
    return {"scales": h.job(scales).workers, "sync_bound": h.job(sync_bound).workers}


def test_measured_models_give_the_spare_slot_to_the_job_that_scales(tmp_path):
    # Unmeasured, both look alike and the first in order gets the third slot.
    assert workers_after_a_round(tmp_path / "prior", record=False) == {
        "scales": 1, "sync_bound": 2}
    assert workers_after_a_round(tmp_path / "measured", record=True) == {
        "scales": 2, "sync_bound": 1}


def test_fitted_models_survive_a_scheduler_restart(tmp_path):
    models = JobModels(tmp_path / "state.db")
    for m in SCALES:
        models.record("job-1", m, now=1.0)
    again = JobModels(tmp_path / "state.db").model("job-1")
    assert again is not None and again.num_points == 2
    assert again.noise_scale == pytest.approx(64.0)
    speedup = FixedBatchThroughput(again.params, GLOBAL_BATCH, GLOBAL_BATCH).speedup(2)
    assert speedup == pytest.approx(1.0 / 0.53, rel=0.10)  # the measured 1 -> 2 speed-up


def test_status_shows_measured_throughput_speedups_and_goodput_per_dollar(tmp_path):
    h = harness(tmp_path, node("n0", slots=3))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=3))
    h.tick()
    row = next(r for r in h.controller.status() if r.job_id == job_id)
    assert row.samples_per_s is None  # nothing measured yet: nothing made up
    for m in SCALES:
        h.controller.job_models.record(job_id, m, now=h.clock.now())
    row = next(r for r in h.controller.status() if r.job_id == job_id)
    assert row.workers == 3 and row.speedup_up is None  # already at its max
    assert row.speedup_down == pytest.approx(
        FixedBatchThroughput(h.controller.job_models.model(job_id).params, GLOBAL_BATCH,
                             GLOBAL_BATCH).speedup(2, base_gpus=3), rel=1e-9)
    assert row.speedup_down < 1.0  # one worker fewer is slower for a job that scales
    assert row.samples_per_s == pytest.approx(241.5)
    assert row.samples_per_usd == pytest.approx(241.5 * 3600 / row.usd_per_hour)


def test_the_status_table_says_what_a_running_job_measured(tmp_path):
    import dataclasses

    from costsched.cli.jobs import format_status

    h = harness(tmp_path, node("n0", slots=3))
    job_id = h.controller.submit(job_text("j", min_workers=1, max_workers=3))
    h.tick()
    assert "MEASURED" not in format_status(
        [dataclasses.asdict(r) for r in h.controller.status()])
    for m in SCALES:
        h.controller.job_models.record(job_id, m, now=h.clock.now())
    text = format_status([dataclasses.asdict(r) for r in h.controller.status()])
    line = next(line for line in text.splitlines() if line.startswith("MEASURED"))
    assert f"MEASURED {job_id}: 242 samples/s" in line  # 241.5, rounded
    assert "+1 worker -" in line  # already at its max of 3
    assert "noise scale 64" in line and "samples/$" in line
