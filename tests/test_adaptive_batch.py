"""Adaptive batch sizes: a job with ``training.adaptive_batch`` runs at the global batch
the cost-aware policy picks from its measured noise scale, with its learning rate
scaled by the job's rule; other jobs keep theirs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from costsched.config.job import DatasetConfig, TrainingConfig
from costsched.errors import ConfigError
from costsched.scheduler.job_models import Measurement
from costsched.training.data import Splits, prepare
from costsched.training.schedule import lr_scale
from tests.test_scheduler_fakes import harness, job_text, node
from tests.test_training_core import (
    FakeClock,
    FakeSession,
    assert_tensors_equal,
    make_job,
    make_spec,
    run_builtin,
)

B0 = 128  # the quickstart's global batch


@pytest.fixture(scope="module")
def digits() -> Splits:
    return prepare(DatasetConfig(name="digits"))


@pytest.mark.parametrize(("rule", "expected"), [("sqrt", 2.0), ("linear", 4.0)])
def test_the_learning_rate_rule_scales_with_the_batch(rule, expected):
    assert lr_scale(4 * B0, B0, rule) == pytest.approx(expected)
    assert lr_scale(B0, B0, rule) == 1.0


def test_a_max_batch_below_the_batch_is_refused():
    with pytest.raises(ConfigError, match="max_batch_size"):
        TrainingConfig(num_epochs=1, global_batch_size=64, adaptive_batch=True,
                       max_batch_size=32)
    assert TrainingConfig(num_epochs=1, global_batch_size=64,
                          adaptive_batch=True).batch_size_limit == 8 * 64


def measured(noise_scale: float) -> Measurement:
    """One worker's steps: compute-bound, and the given noise scale (examples)."""
    return Measurement(num_workers=1, num_nodes=1, local_bsz=B0, accum_steps=1,
                       step_time_s=0.5, sync_time_s=0.0, samples_per_s=B0 / 0.5,
                       grad_sqr=1.0, grad_var=noise_scale)


def start_with_noise(tmp_path, noise_scale: float | None, *, adaptive: bool = True):
    h = harness(tmp_path, node("n1", slots=2))
    training = {"num_epochs": 3, "global_batch_size": B0, "adaptive_batch": adaptive}
    job_id = h.controller.submit(job_text("adapt", max_workers=2, training=training))
    if noise_scale is not None:
        h.controller.job_models.record(job_id, measured(noise_scale), now=h.clock.now())
    h.controller.tick()
    return h, job_id


def test_a_noisy_gradient_gets_a_larger_batch_with_its_learning_rate_scaled(tmp_path):
    h, job_id = start_with_noise(tmp_path, noise_scale=1e6)  # far above any batch here
    assert h.state(job_id) == "RUNNING"
    batch = h.runner.batch_sizes[job_id]
    assert batch == 8 * B0  # the default limit: each doubling still nearly doubles progress
    events = [e["detail"] for e in h.controller.logs(job_id) if e["kind"] == "batch"]
    assert events == [f"global batch {B0} -> {batch} (learning rate x2.83 of the configured, "
                      "sqrt rule)"]


def test_a_clean_gradient_keeps_the_batch_it_asked_for(tmp_path):
    h, job_id = start_with_noise(tmp_path, noise_scale=1.0)  # a larger batch buys nothing
    assert h.runner.batch_sizes[job_id] == B0
    assert not [e for e in h.controller.logs(job_id) if e["kind"] == "batch"]


def test_before_its_noise_is_measured_a_job_keeps_its_batch(tmp_path):
    h, job_id = start_with_noise(tmp_path, noise_scale=None)
    assert h.runner.batch_sizes[job_id] == B0


def test_a_job_that_did_not_opt_in_runs_at_its_own_batch(tmp_path):
    h, job_id = start_with_noise(tmp_path, noise_scale=1e6, adaptive=False)
    assert h.runner.batch_sizes[job_id] is None


def test_the_loop_at_a_chosen_batch_trains_as_if_configured_with_it(digits, tmp_path):
    """Run at batch 128 chosen for a batch-64 job (lr 0.01, sqrt rule) == a job configured
    at batch 128 with lr 0.01 x sqrt(2): same steps, same learning rates, same model."""
    chosen = dataclasses.replace(make_spec(make_job(num_epochs=2, adaptive_batch=True),
                                           digits), batch_size=128)
    job = make_job(num_epochs=2, global_batch_size=128)
    configured = make_spec(dataclasses.replace(
        job, optimizer=dataclasses.replace(job.optimizer, lr=0.01 * math.sqrt(2))), digits)
    sessions = []
    for name, spec in (("chosen", chosen), ("configured", configured)):
        clock = FakeClock()
        (tmp_path / name).mkdir()
        sessions.append(FakeSession(digits.x_train, digits.y_train, clock, tmp_path / name))
        run_builtin(spec, sessions[-1], clock)
    a, b = sessions
    assert [r["global_step"] for r in a.reports] == [r["global_step"] for r in b.reports]
    assert a.reports[-1]["global_step"] == 2 * (1437 // 128)
    assert [r.get("lr") for r in a.reports] == pytest.approx([r.get("lr") for r in b.reports])
    end_a = torch.load(a.saved[-1][1] / "state.pt", weights_only=False)
    end_b = torch.load(b.saved[-1][1] / "state.pt", weights_only=False)
    assert_tensors_equal(end_a["model"], end_b["model"])


def test_a_resume_at_a_new_batch_keeps_its_place_and_scales_the_schedule(digits, tmp_path):
    job = make_job(num_epochs=2, adaptive_batch=True)
    clock = FakeClock()
    (tmp_path / "first").mkdir()
    first = FakeSession(digits.x_train, digits.y_train, clock, tmp_path / "first")
    first.stop_after_batches = 12  # mid epoch 1 at batch 64 (22 steps an epoch)
    run_builtin(make_spec(job, digits), first, clock)
    stopped_at, checkpoint = first.saved[-1]
    assert stopped_at == 15  # 15 x 64 = 960 examples into the epoch

    (tmp_path / "second").mkdir()
    second = FakeSession(digits.x_train, digits.y_train, clock, tmp_path / "second",
                         resume_from=checkpoint)
    result = run_builtin(dataclasses.replace(make_spec(job, digits), batch_size=256),
                         second, clock)
    assert result["stop_reason"] == "COMPLETED"
    state = torch.load(second.saved[-1][1] / "state.pt", weights_only=False)
    assert state["scheduler"]["base_lrs"] == pytest.approx([0.01 * 2.0])  # sqrt(256 / 64)
    progress = state["progress"]
    assert progress["batch_size"] == 256
    # 960 examples in, at 256 a batch: batch 3 of epoch 1 is next (of 5), then 5 more
    assert second.reports[-1]["global_step"] == stopped_at + (1437 // 256 - 3) + 1437 // 256
