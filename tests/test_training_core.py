"""The training core without Ray: batch plan, LR schedule, checkpoint state, the loop on an
in-process fake Session with an injected clock, planning and ``train --dry-run``."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from costsched import api
from costsched.cli.main import main as cli_main
from costsched.config.job import (
    CheckpointSection,
    CostSection,
    DatasetConfig,
    JobConfig,
    ModelConfig,
    OptimizerConfig,
    ScalingSection,
    TrainingConfig,
)
from costsched.cost.estimate import make_plan
from costsched.cost.prices import JobRate, load_catalog
from costsched.errors import ConfigError
from costsched.training.data import Splits, prepare
from costsched.training.loop import builtin_config, train_loop
from costsched.training.models import build_model
from costsched.training.optim import build_optimizer, build_scheduler
from costsched.training.run import Run, RunMeta, RunSpec, save_checkpoint
from costsched.training.schedule import BatchPlan, lr_multiplier
from costsched.training.state import (
    RUN_META_KEY,
    Progress,
    checkpoint_order,
    restore_training_state,
    training_state,
)

REPO = Path(__file__).resolve().parents[1]
CATALOG = load_catalog()


# -- batch plan ----------------------------------------------------------------------------

def plans(global_batch_size: int, world_size: int, micro: int = 0) -> list[BatchPlan]:
    return [BatchPlan(global_batch_size=global_batch_size, world_size=world_size, rank=r,
                      micro_batch_size=micro) for r in range(world_size)]


@pytest.mark.parametrize("world_size", range(1, 9))
@pytest.mark.parametrize("global_batch_size", [100, 128, 127, 7])
def test_local_batches_sum_to_the_global_batch(global_batch_size, world_size):
    sizes = [p.local_batch_size for p in plans(global_batch_size, world_size)]
    assert sum(sizes) == global_batch_size
    assert max(sizes) - min(sizes) <= 1
    assert max(sizes) == plans(global_batch_size, world_size)[0].max_local_batch_size


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_loss_scale_makes_the_ddp_average_the_global_mean_gradient(world_size):
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    global_batch = 7  # uneven over 2 and 3 ranks on purpose
    x, y = torch.randn(global_batch, 5), torch.randint(0, 3, (global_batch,))

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        return [g.clone() for g in torch.autograd.grad(loss, list(model.parameters()))]

    expected = grads(nn.functional.cross_entropy(model(x), y))  # mean over the global batch
    per_rank, start = [], 0
    for plan in plans(global_batch, world_size):
        rows = slice(start, start + plan.local_batch_size)
        start += plan.local_batch_size
        losses = nn.functional.cross_entropy(model(x[rows]), y[rows], reduction="none")
        per_rank.append(grads(losses.sum() * plan.loss_scale))
    assert start == global_batch
    ddp_average = [sum(g) / world_size for g in zip(*per_rank, strict=True)]
    for got, want in zip(ddp_average, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("size", "micro"), [(10, 0), (10, 3), (10, 5), (10, 10), (10, 16),
                                             (1, 4), (127, 8)])
def test_micro_batches_cover_the_local_batch_exactly(size, micro):
    plan = BatchPlan(global_batch_size=256, world_size=2, rank=0, micro_batch_size=micro)
    slices = plan.micro_batches(size)
    covered = [i for s in slices for i in range(size)[s]]
    assert covered == list(range(size))
    assert all(s.stop - s.start <= (micro or size) for s in slices)
    assert len(slices) == math.ceil(size / (micro or size))


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize(("num_train_rows", "global_batch_size"),
                         [(1437, 64), (1000, 127), (6400, 128), (50, 128)])
def test_steps_per_epoch_agree_across_ranks_and_fit_each_shard(num_train_rows, global_batch_size,
                                                              world_size):
    steps = {p.steps_per_epoch(num_train_rows) for p in plans(global_batch_size, world_size)}
    assert len(steps) == 1
    (n,) = steps
    assert n >= 1
    if num_train_rows >= global_batch_size:
        plan = plans(global_batch_size, world_size)[0]
        assert n * plan.max_local_batch_size <= num_train_rows // world_size
        assert n <= num_train_rows // global_batch_size


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # warm-up: (0 + 1) / 10
        (4, 0.5),
        (9, 1.0),
        (10, 1.0),  # cosine starts at the peak
        (60, 0.1 + 0.9 * 0.5),  # half way through the decay
        (110, 0.1),  # end: min_lr_ratio
        (500, 0.1),  # past the end: stays at the floor
    ],
)
def test_lr_multiplier_warmup_then_cosine(step, expected):
    got = lr_multiplier(step, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert got == pytest.approx(expected)


def test_lr_multiplier_without_warmup_starts_at_the_peak():
    assert lr_multiplier(0, warmup_steps=0, total_steps=100, min_lr_ratio=0.0) == 1.0
    assert lr_multiplier(100, warmup_steps=0, total_steps=100, min_lr_ratio=0.0) == (
        pytest.approx(0.0)
    )


# -- checkpoint state ----------------------------------------------------------------------

def small_training_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("mlp", input_shape=(6,), num_classes=3, widths=(8,), dropout=0.2)
    config = OptimizerConfig(name="adamw", lr=0.01, weight_decay=0.01, warmup_steps=3)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(config, optimizer, total_steps=50)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, n: int) -> None:
    gen = torch.Generator().manual_seed(123)
    for _ in range(n):
        x, y = torch.randn(4, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()  # dropout draws from torch RNG
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()


def draws() -> tuple:
    return torch.rand(3), np.random.rand(3), random.random()


def assert_tensors_equal(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_tensors_equal(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_tensors_equal(x, y)
    else:
        assert a == b


def test_save_and_load_state_restore_everything_bit_exact(tmp_path):
    model, optimizer, scheduler = small_training_setup()
    train_steps(model, optimizer, scheduler, 5)
    progress = Progress(epoch=2, batch_in_epoch=7, global_step=5,
                        history=[{"val_accuracy": 0.5, "epoch": 1.0}])
    meta = RunMeta(sequence=3, global_step=5, usd_at_checkpoint=0.125, wall_time=1234.5,
                   usd_to_target=0.1)
    saved = {"model": copy.deepcopy(model.state_dict()),
             "optimizer": copy.deepcopy(optimizer.state_dict()),
             "scheduler": copy.deepcopy(scheduler.state_dict())}
    assert saved["optimizer"]["state"], "AdamW must have moment buffers to round-trip"
    path = save_checkpoint(tmp_path, training_state(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=None, progress=progress),
        meta)
    assert path.is_file() and not (tmp_path / "state.pt.tmp").exists()
    after_save = draws()
    train_steps(model, optimizer, scheduler, 3)  # move everything on
    draws()

    fresh_model, fresh_optimizer, fresh_scheduler = small_training_setup(seed=99)
    payload = torch.load(path, weights_only=True)  # plain tensors and containers only
    saved_meta = payload.pop(RUN_META_KEY)
    loaded = restore_training_state(payload, model=fresh_model, optimizer=fresh_optimizer,
                                    scheduler=fresh_scheduler, scaler=None)
    after_load = draws()
    assert_tensors_equal(fresh_model.state_dict(), saved["model"])
    assert_tensors_equal(fresh_optimizer.state_dict(), saved["optimizer"])
    assert fresh_scheduler.state_dict() == saved["scheduler"]
    assert fresh_scheduler.get_last_lr() == pytest.approx([0.01 * lr_multiplier(
        5, warmup_steps=3, total_steps=50, min_lr_ratio=0.0)])
    assert torch.equal(after_load[0], after_save[0])
    np.testing.assert_array_equal(after_load[1], after_save[1])
    assert after_load[2] == after_save[2]
    assert dataclasses.asdict(loaded) == dataclasses.asdict(progress)
    assert saved_meta == dataclasses.asdict(meta)
    assert {"python", "numpy", "torch"} <= payload["rng"].keys()
    assert checkpoint_order(tmp_path) == (3, 5)


def test_training_after_a_load_matches_training_straight_on(tmp_path):
    model, optimizer, scheduler = small_training_setup()
    train_steps(model, optimizer, scheduler, 4)
    path = save_checkpoint(tmp_path, training_state(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
        progress=Progress()), RunMeta())
    train_steps(model, optimizer, scheduler, 3)

    resumed = small_training_setup(seed=7)
    restore_training_state(torch.load(path, weights_only=True), model=resumed[0],
                           optimizer=resumed[1], scheduler=resumed[2], scaler=None)
    train_steps(*resumed, 3)
    assert_tensors_equal(resumed[0].state_dict(), model.state_dict())


# -- the loop on a fake session ------------------------------------------------------------

class FakeClock:
    def __init__(self, start: float = 10_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSession:
    """One worker on the CPU; each training batch costs ``step_s`` seconds of fake time."""

    rank = 0
    world_size = 1
    device = torch.device("cpu")

    def __init__(self, x: np.ndarray, y: np.ndarray, clock: FakeClock, saved_root: Path,
                 resume_from: Path | None = None, step_s: float = 1.0, seed: int = 0):
        self.x, self.y, self.clock, self.step_s, self.seed = x, y, clock, step_s, seed
        self.saved_root, self.resume_from = saved_root, resume_from
        self.reports: list[dict[str, Any]] = []
        self.saved: list[tuple[int, Path]] = []
        self.batches = 0
        self.stop_after_batches: int | None = None

    def prepare_model(self, model: nn.Module, **strategy_kwargs) -> nn.Module:
        return model

    def prepare_data_loader(self, loader):
        return loader

    def dataset_shard(self, name: str):
        raise KeyError(name)

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.x))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            self.clock.advance(self.step_s)
            self.batches += 1
            rows = order[start : start + batch_size]
            yield torch.as_tensor(self.x[rows]), torch.as_tensor(self.y[rows])

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        yield None if self.resume_from is None else str(self.resume_from)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None,
               name: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir is not None:
            dest = self.saved_root / f"ckpt-{len(self.saved):03d}"
            shutil.copytree(checkpoint_dir, dest)
            self.saved.append((metrics["global_step"], dest))

    def broadcast(self, value: int) -> int:
        return value

    def stop_requested(self) -> str | None:
        """Asks to stop once ``stop_after_batches`` batches were drawn (None: never)."""
        if self.stop_after_batches is not None and self.batches >= self.stop_after_batches:
            return "PREEMPTED"
        return None


USD_PER_WORKER_S = 0.001  # one fake second of one worker; 1 s per step -> $0.001 a step
RATE = JobRate(instance_type="fake", spot=False, usd_per_accelerator_hour=USD_PER_WORKER_S * 3600,
               accelerators_per_worker=1.0)
STEPS_PER_EPOCH = 1437 // 64  # digits train split at global batch 64


@pytest.fixture(scope="module")
def digits() -> Splits:
    return prepare(DatasetConfig(name="digits"))


def make_job(**training) -> JobConfig:
    budget = training.pop("budget_usd", 100.0)
    scaling = training.pop("scaling", ScalingSection(use_gpu=False, accelerator_resource="cpu"))
    return JobConfig(
        name="core", dataset=DatasetConfig(name="digits"),
        model=ModelConfig(kind="mlp", widths=(32,)),
        training=TrainingConfig(**({"num_epochs": 3, "global_batch_size": 64} | training)),
        optimizer=OptimizerConfig(lr=0.01),
        scaling=scaling, checkpoint=CheckpointSection(interval_steps=5),
        cost=CostSection(budget_usd=budget),
    )


def make_spec(job: JobConfig, splits: Splits, run_started_at: float = 10_000.0,
              model_factory=None) -> RunSpec:
    factory = model_factory or (lambda: build_model(
        "mlp", input_shape=splits.input_shape, num_classes=splits.num_classes, widths=(32,)))
    return RunSpec(job=job, rate=RATE, run_started_at=run_started_at,
                   entrypoint_config=builtin_config(
                       model_factory=factory, x_val=splits.x_val, y_val=splits.y_val,
                       x_test=splits.x_test, y_test=splits.y_test,
                       num_train_rows=len(splits.x_train)))


def run_builtin(spec: RunSpec, session: FakeSession, clock: FakeClock) -> dict[str, Any]:
    """The built-in entrypoint on one fake worker, as the Ray layer runs it."""
    run = Run(spec, session, clock=clock)
    with api.bound(run):
        result = train_loop(dict(spec.entrypoint_config))
        run.close()
    return result


def run_job(job: JobConfig, splits: Splits, root: Path, resume_from: Path | None = None,
            clock: FakeClock | None = None) -> tuple[dict[str, Any], FakeSession]:
    clock = clock or FakeClock()
    root.mkdir(parents=True, exist_ok=True)
    session = FakeSession(splits.x_train, splits.y_train, clock, root, resume_from=resume_from)
    return run_builtin(make_spec(job, splits), session, clock), session


@pytest.fixture(scope="module")
def full_run(digits, tmp_path_factory):
    return run_job(make_job(), digits, tmp_path_factory.mktemp("full"))


def epoch_reports(session: FakeSession) -> list[dict[str, Any]]:
    return [r for r in session.reports if "val_accuracy" in r and not r.get("final")]


def test_a_run_completes_every_epoch_and_reports_val_accuracy(full_run):
    result, session = full_run
    assert result["stop_reason"] == "COMPLETED"
    epochs = epoch_reports(session)
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in epochs)
    assert epochs[-1]["val_accuracy"] > 0.8  # the MLP does learn digits
    final = session.reports[-1]
    assert final["final"] is True and final["global_step"] == 3 * STEPS_PER_EPOCH
    assert 0.0 <= result["test_accuracy"] <= 1.0
    # each report's cost is the fake seconds elapsed times the worker price
    assert final["cost_usd"] == pytest.approx(3 * STEPS_PER_EPOCH * USD_PER_WORKER_S)
    assert all(r["checkpointed"] for r in session.reports)


def test_reaching_the_target_stops_early_and_records_usd_to_target(digits, tmp_path):
    job = make_job(num_epochs=20, target_metric="val_accuracy", target_value=0.8)
    result, session = run_job(job, digits, tmp_path)
    assert result["stop_reason"] == "TARGET_REACHED"
    epochs = epoch_reports(session)
    assert len(epochs) < 20
    assert epochs[-1]["val_accuracy"] >= 0.8
    assert all(r["val_accuracy"] < 0.8 for r in epochs[:-1])
    assert result["usd_to_target"] > 0
    assert result["usd_to_target"] == pytest.approx(
        len(epochs) * STEPS_PER_EPOCH * USD_PER_WORKER_S)
    assert session.reports[-1]["stop_reason"] == "TARGET_REACHED"


@pytest.mark.parametrize("budget_usd", [0.012, 0.03, 0.05])
def test_a_small_budget_stops_the_run_without_overspending(digits, tmp_path, budget_usd):
    result, session = run_job(make_job(budget_usd=budget_usd), digits, tmp_path)
    assert result["stop_reason"] == "BUDGET_EXHAUSTED"
    costs = [r["cost_usd"] for r in session.reports]
    assert max(costs) <= budget_usd
    assert costs == sorted(costs)
    assert session.reports[-1]["global_step"] < 3 * STEPS_PER_EPOCH


def test_resume_continues_from_the_checkpoint_to_the_same_end(full_run, digits, tmp_path):
    _, straight = full_run
    step, checkpoint = next((s, d) for s, d in straight.saved if s == 30)  # mid epoch 2
    cost_at_checkpoint = next(r["cost_usd"] for r in straight.reports if r["global_step"] == 30)
    clock = FakeClock(start=straight.clock.now + 500.0)  # the restart itself took a while
    result, resumed = run_job(make_job(), digits, tmp_path, resume_from=checkpoint, clock=clock)

    assert result["stop_reason"] == "COMPLETED"
    first = resumed.reports[0]
    assert first["resumed_from_step"] == step
    assert first["global_step"] > step
    assert first["global_step"] < 2 * STEPS_PER_EPOCH + 1  # it did not start over
    assert resumed.reports[-1]["global_step"] == straight.reports[-1]["global_step"]
    # the same steps on the same data from the same state: the same model at the end
    end_straight = torch.load(straight.saved[-1][1] / "state.pt", weights_only=False)
    end_resumed = torch.load(resumed.saved[-1][1] / "state.pt", weights_only=False)
    assert_tensors_equal(end_resumed["model"], end_straight["model"])

    costs = [cost_at_checkpoint] + [r["cost_usd"] for r in resumed.reports]
    assert costs == sorted(costs)  # cost before the restart is kept, never reset
    assert costs[1] > cost_at_checkpoint + 500 * USD_PER_WORKER_S  # the restart gap is paid


def test_an_outside_stop_checkpoints_within_a_few_steps_and_resumes(full_run, digits,
                                                                    tmp_path):
    _, straight = full_run
    job = dataclasses.replace(make_job(), checkpoint=CheckpointSection(interval_steps=20))
    clock = FakeClock()
    session = FakeSession(digits.x_train, digits.y_train, clock, tmp_path / "stopped")
    session.stop_after_batches = 12  # asked between the checkpoints at steps 0 and 20
    result = run_builtin(make_spec(job, digits), session, clock)

    assert result["stop_reason"] == "PREEMPTED"
    assert session.reports[-1]["stop_reason"] == "PREEMPTED"
    stopped_at, checkpoint = session.saved[-1]
    assert stopped_at == 15  # the next stop poll after step 12, not the step-20 checkpoint
    assert session.reports[-1]["global_step"] == 15
    assert "test_accuracy" not in result  # no final evaluation: the stop is quick

    resumed_result, resumed = run_job(job, digits, tmp_path / "resumed", resume_from=checkpoint)
    assert resumed_result["stop_reason"] == "COMPLETED"
    assert resumed.reports[0]["resumed_from_step"] == 15
    assert resumed.reports[-1]["global_step"] == straight.reports[-1]["global_step"]


def test_a_run_that_finished_every_epoch_is_reported_completed(digits, tmp_path):
    clock = FakeClock()

    class SlowToEvaluate(nn.Module):
        """Each evaluation pass takes 10 s of fake time (training steps take 1 s each)."""

        def __init__(self):
            super().__init__()
            self.inner = build_model("mlp", input_shape=(64,), num_classes=10, widths=(32,))

        def forward(self, x):
            if not self.training:
                clock.advance(10.0)
            return self.inner(x)

    # 66 steps + 4 evaluations = 106 s = $0.106 < budget $0.11: all of it is affordable
    job = make_job(budget_usd=0.11)
    spec = make_spec(job, digits, model_factory=SlowToEvaluate)
    session = FakeSession(digits.x_train, digits.y_train, clock, tmp_path)
    result = run_builtin(spec, session, clock)
    final = session.reports[-1]
    assert final["global_step"] == 3 * STEPS_PER_EPOCH and final["cost_usd"] <= 0.11
    assert result["stop_reason"] == "COMPLETED"
    assert final["stop_reason"] == result["stop_reason"]


def test_resume_on_an_epoch_boundary_does_not_report_a_zero_loss(digits, tmp_path):
    job = dataclasses.replace(make_job(num_epochs=2),
                              checkpoint=CheckpointSection(interval_steps=STEPS_PER_EPOCH))
    _, straight = run_job(job, digits, tmp_path / "straight")
    # the step-interval checkpoint on the last step of epoch 1, saved before end_epoch's
    checkpoint = next(d for s, d in straight.saved if s == STEPS_PER_EPOCH)
    _, resumed = run_job(job, digits, tmp_path / "resumed", resume_from=checkpoint)
    first_epoch = epoch_reports(resumed)[0]
    assert first_epoch["epoch"] == 1
    assert first_epoch.get("loss", math.nan) != 0.0
    assert first_epoch.get("train_accuracy", math.nan) != 0.0


def test_fp16_on_cpu_is_a_config_error(digits, tmp_path):
    job = make_job(precision="fp16", scaling=ScalingSection(use_gpu=True))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        run_job(job, digits, tmp_path)


def test_bf16_trains_on_cpu(digits, tmp_path):
    result, session = run_job(make_job(num_epochs=1, precision="bf16"), digits, tmp_path)
    assert result["stop_reason"] == "COMPLETED"
    (epoch,) = epoch_reports(session)
    assert math.isfinite(epoch["loss"]) and epoch["loss"] > 0
    assert epoch["val_accuracy"] > 0.3


# -- planning and dry run ------------------------------------------------------------------

def test_make_plan_prices_the_job(digits):
    job = dataclasses.replace(make_job(), scaling=ScalingSection(
        min_workers=1, max_workers=2, use_gpu=False, accelerator_resource="cpu_slot"))
    plan = make_plan(job, digits, CATALOG)
    assert plan.num_workers == 2
    assert plan.usd_per_hour == pytest.approx(0.0893)  # local-cpu: 2 slots of 0.0893/2 $/h
    assert plan.steps_per_epoch == STEPS_PER_EPOCH and plan.total_steps == 3 * STEPS_PER_EPOCH
    assert plan.estimated_hours == pytest.approx(plan.total_steps * plan.step_s / 3600)
    assert plan.estimated_usd == pytest.approx(plan.usd_per_hour * plan.estimated_hours)
    assert plan.num_params == 64 * 32 + 32 + 32 * 10 + 10
    text = "\n".join(plan.lines(job))
    assert "workers        1..2" in text
    assert "resources per worker {'CPU': 1.0, 'cpu_slot': 1.0}" in text
    assert "$0.0893/h for 2 worker(s)" in text and "on-demand" in text
    assert f"${plan.estimated_usd:.5f}" in text


def test_cli_train_dry_run_prints_the_estimate_and_writes_nothing(tmp_path, capsys):
    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    data["dataset"]["num_samples"] = 1000
    data["ledger_path"] = str(tmp_path / "ledger.db")
    data["storage_path"] = str(tmp_path / "runs")
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(data))
    assert cli_main(["train", str(path), "--dry-run", "--no-profile"]) == 0
    out = capsys.readouterr().out
    assert "estimate" in out and "budget $1" in out
    assert "data: 1000 rows read" in out
    assert not (tmp_path / "ledger.db").exists()
    assert not (tmp_path / "runs").exists()


def test_every_report_carries_the_measured_step_and_a_switch_turns_it_off(digits, tmp_path):
    _, measured = run_job(make_job(num_epochs=1), digits, tmp_path / "on")
    last = measured.reports[-1]
    assert last["step_time_s"] > 0 and last["accum_steps"] == 1
    assert last["sync_time_s"] == 0.0  # one worker: nothing to synchronise
    assert (last["num_nodes"], last["local_bsz"]) == (1, 64)
    assert "grad_var" not in last  # one worker, one micro-batch: no noise scale to measure
    state = torch.load(measured.saved[-1][1] / "state.pt", weights_only=True)
    assert state[RUN_META_KEY]["measure"]["means"]  # kept for the resumed run
    off = dataclasses.replace(make_job(num_epochs=1), training=TrainingConfig(
        num_epochs=1, global_batch_size=64, measure_steps=False))
    _, unmeasured = run_job(off, digits, tmp_path / "off")
    assert "step_time_s" not in unmeasured.reports[-1]


def test_accumulation_on_one_worker_measures_the_noise_scale(digits, tmp_path):
    job = make_job(num_epochs=2, micro_batch_size=16)  # four micro-batches a step
    _, session = run_job(job, digits, tmp_path)
    last = session.reports[-1]
    assert last["accum_steps"] == 4 and last["local_bsz"] == 16
    assert last["grad_var"] > 0 and last["grad_sqr"] > 0 and last["noise_scale"] > 0


def test_a_few_epochs_of_a_longer_job_run_at_the_longer_schedule(digits, tmp_path):
    # A profile runs 3 epochs of a 30-epoch job: its learning rate must follow the
    # job's schedule, not decay to nothing over 3 epochs as a 3-epoch job's does.
    def final_lr(schedule_epochs: int | None, root: Path) -> float:
        clock = FakeClock()
        root.mkdir(parents=True)
        spec = make_spec(make_job(), digits)
        spec = dataclasses.replace(spec, entrypoint_config=spec.entrypoint_config | {
            "schedule_epochs": schedule_epochs})
        session = FakeSession(digits.x_train, digits.y_train, clock, root)
        run_builtin(spec, session, clock)
        state = torch.load(session.saved[-1][1] / "state.pt", weights_only=True)
        return state["scheduler"]["_last_lr"][0]

    own, longer = final_lr(None, tmp_path / "own"), final_lr(30, tmp_path / "longer")
    peak = 0.01  # make_job's learning rate
    assert own < 0.05 * peak  # a 3-epoch cosine schedule has decayed by its end
    # A tenth of the way through a 30-epoch cosine: still near the peak (0.976 of it).
    assert longer > 0.9 * peak
