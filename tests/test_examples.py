"""The example training programs in ``examples/``, run in-process for a few steps on a
fake session: their loss falls, they checkpoint every interval, a preempted run
resumes at its checkpoint and ends exactly where an uninterrupted one does, and
their target stops them. Each example is loaded from its own ``job.yaml``."""

from __future__ import annotations

import ast
import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import costsched.api as cs
from costsched.config.entrypoint import import_entrypoint
from costsched.config.job import JobConfig, load_job_config
from costsched.training.run import STOP_POLL_STEPS, Run, RunSpec
from tests.test_api import StepSession
from tests.test_training_core import RATE, USD_PER_WORKER_S, FakeClock

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = {
    # Small enough for a few seconds on one CPU; dropout off so a resumed run can be
    # compared with an uninterrupted one number for number.
    "charlm": {"config": {"max_chars": 200_000, "windows_per_epoch": 240, "context": 32,
                          "val_windows": 64, "warmup_steps": 5},
               "global_batch_size": 8, "num_epochs": 1, "interval": 10,
               "steps": [10, 20, 30]},
    "image_classifier": {"config": {"dropout": 0.0},
                         "global_batch_size": 64, "num_epochs": 3, "interval": 20,
                         "steps": [20, 22, 40, 44, 60, 66]},  # 22 steps an epoch
}


class TimedLoader:
    """A data loader whose every batch takes one second of the fake clock."""

    def __init__(self, loader: Any, clock: FakeClock):
        self.loader, self.clock = loader, clock

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            self.clock.advance(1.0)
            yield batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


class ExampleSession(StepSession):
    def prepare_data_loader(self, loader: Any) -> Any:
        return TimedLoader(loader, self.clock)


def small_job(name: str, config: dict[str, Any] | None = None, **training: Any) -> JobConfig:
    size = SMALL[name]
    job = load_job_config(EXAMPLES / name / "job.yaml")
    training = {"global_batch_size": size["global_batch_size"],
                "num_epochs": size["num_epochs"], "target_metric": None} | training
    return dataclasses.replace(
        job, entrypoint_config=job.entrypoint_config | size["config"] | (config or {}),
        training=dataclasses.replace(job.training, **training),
        checkpoint=dataclasses.replace(job.checkpoint, interval_steps=size["interval"]),
        cost=dataclasses.replace(job.cost, budget_usd=1.0))  # $0.001 a fake step: never binds


def run_example(job: JobConfig, root: Path, *, resume_from: Path | None = None,
                stop_at: float | None = None) -> ExampleSession:
    clock = FakeClock()
    session = ExampleSession(clock, root, resume_from=resume_from,
                             stop_at=None if stop_at is None else clock() + stop_at)
    root.mkdir(parents=True, exist_ok=True)
    run = Run(RunSpec(job=job, rate=RATE, run_started_at=clock(),
                      entrypoint_config=dict(job.entrypoint_config)), session, clock=clock)
    with cs.bound(run):
        import_entrypoint(job.entrypoint)(dict(job.entrypoint_config))
        run.close()
    return session


@pytest.fixture(scope="module", autouse=True)
def examples_importable() -> Iterator[None]:
    """The examples' folders on the path, and one torch thread, as a Ray worker with
    one CPU has (two threads on two busy cores run these small models far slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        for name in SMALL:
            patch.syspath_prepend(str(EXAMPLES / name))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory) -> dict[str, ExampleSession]:
    """Each example run to its end, uninterrupted (shared: the runs take seconds)."""
    return {name: run_example(small_job(name), tmp_path_factory.mktemp(name))
            for name in SMALL}


@pytest.mark.parametrize("name", SMALL)
def test_an_example_learns_and_checkpoints_every_interval(name, full_runs):
    session = full_runs[name]
    checkpointed = [r for r in session.reports if r.get("checkpointed")]
    assert [r["global_step"] for r in checkpointed] == SMALL[name]["steps"]
    assert [step for step, _ in session.saved] == SMALL[name]["steps"]
    first, last = checkpointed[0], checkpointed[-1]
    assert last["val_loss"] < 0.9 * first["val_loss"]
    assert last["loss"] < first["loss"]
    assert last["val_accuracy"] > first["val_accuracy"]
    assert session.reports[-1]["stop_reason"] == "COMPLETED"
    assert session.reports[-1]["cost_usd"] == pytest.approx(
        SMALL[name]["steps"][-1] * USD_PER_WORKER_S)  # one fake second a step


def test_the_char_model_beats_a_uniform_guess(full_runs):
    last = full_runs["charlm"].reports[-1]
    vocab_size = 100  # about 95 characters in the stdlib's text, plus the unknown id
    assert last["val_loss"] < math.log(vocab_size) - 1.5
    assert last["val_accuracy"] > 0.25  # more than always guessing a space


def test_the_char_model_learns_in_bf16_on_the_cpu(tmp_path):
    job = small_job("charlm", {"windows_per_epoch": 160}, precision="bf16")  # 20 steps
    session = run_example(job, tmp_path)
    checkpointed = [r for r in session.reports if r.get("checkpointed")]
    assert [r["global_step"] for r in checkpointed] == [10, 20]
    assert checkpointed[1]["val_loss"] < checkpointed[0]["val_loss"] < math.log(100) - 1.5


@pytest.mark.parametrize("name", SMALL)
def test_a_preempted_example_resumes_at_its_checkpoint(name, full_runs, tmp_path):
    job = small_job(name)
    stopped = run_example(job, tmp_path / "first", stop_at=0.0)  # asked to stop at once
    assert stopped.reports[-1]["stop_reason"] == "PREEMPTED"
    # should_stop is asked every step, so the stop lands on the first poll, before
    # the first interval checkpoint.
    assert [step for step, _ in stopped.saved] == [STOP_POLL_STEPS]
    resumed = run_example(job, tmp_path / "second", resume_from=stopped.saved[-1][1])
    assert resumed.reports[0]["resumed_from_step"] == STOP_POLL_STEPS
    assert [step for step, _ in resumed.saved] == SMALL[name]["steps"]
    assert resumed.reports[-1]["stop_reason"] == "COMPLETED"
    uninterrupted = full_runs[name].reports[-1]
    for metric in ("val_loss", "val_accuracy"):
        assert resumed.reports[-1][metric] == pytest.approx(uninterrupted[metric], rel=1e-4)


@pytest.mark.parametrize("name", SMALL)
def test_reaching_the_target_stops_an_example(name, full_runs, tmp_path):
    reports = [r for r in full_runs[name].reports if r.get("checkpointed")]
    second = reports[1]  # the uninterrupted run's accuracy at its second checkpoint
    job = small_job(name, target_metric="val_accuracy", target_value=second["val_accuracy"])
    first_reach = next(r["global_step"] for r in reports
                       if r["val_accuracy"] >= second["val_accuracy"])
    session = run_example(job, tmp_path)
    last = session.reports[-1]
    assert last["stop_reason"] == "TARGET_REACHED"
    assert last["global_step"] == first_reach < SMALL[name]["steps"][-1]
    assert last["usd_to_target"] == pytest.approx(first_reach * USD_PER_WORKER_S)


@pytest.mark.parametrize("name", SMALL)
def test_an_example_uses_only_the_public_api(name):
    source = (EXAMPLES / name / f"{name}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert {m for m in imported if m.split(".")[0] == "costsched"} == {"costsched.api"}
    assert not {m for m in imported if m.split(".")[0] == "ray"}
