"""Goodput measured while training: the sync/compute split of a step against a known
delay on a real 2-process gloo group, and the noise scale measured through the meter
against the closed-form answer of linear regression (see test_goodput_models)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import optimizer as optimizer_module

from costsched.goodput.measure import StepMeter
from costsched.goodput.throughput import fit_throughput
from tests.test_goodput_models import DELTA, DIM, SIGMA, TRUE_NOISE_SCALE

DELAY_S = 0.05
"""Rank 1 sleeps this long before each backward pass: rank 0 waits for it in the all-reduce."""
STEPS, WARMUP = 20, 4
NOISE_STEPS, INIT_BATCH = 400, 32


def regression_model(w_star: torch.Tensor) -> nn.Linear:
    """y = x.w, held at w* + delta: the gradient statistics have a closed form there."""
    model = nn.Linear(DIM, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w_star + DELTA)
    return model


def regression_loss(model: nn.Module, w_star: torch.Tensor, gen: torch.Generator,
                    batch: int) -> torch.Tensor:
    x = torch.randn(batch, DIM, generator=gen, dtype=torch.float64)
    y = x @ w_star + SIGMA * torch.randn(batch, generator=gen, dtype=torch.float64)
    return 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()


def train_regression(model: nn.Module, meter_kwargs: dict[str, Any], rank: int, *,
                     micro_batches: int, batch: int) -> StepMeter:
    """Steps with lr = 0, so every step samples gradients at the same point."""
    w_star = torch.randn(DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gen = torch.Generator().manual_seed(100 + rank)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    meter = StepMeter(model, optimizer, local_batch_size=batch, init_batch_size=INIT_BATCH,
                      **({"noise_budget": None} | meter_kwargs))
    for _ in range(NOISE_STEPS):
        for _ in range(micro_batches):
            regression_loss(model, w_star, gen, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return meter


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))


def timed_steps(model: nn.Module, rank: int, *, delay_s: float, steps: int = STEPS,
                micro_batches: int = 1) -> tuple[StepMeter, float]:
    """Train ``steps``; returns the meter and the wall time per step of the steps it keeps
    (all but the first, untimed, and the warm-up)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    meter = StepMeter(model, optimizer, local_batch_size=16, warmup_steps=WARMUP,
                      flush_steps=1)  # every step folded in, the last one too
    x, y = torch.randn(16, 32), torch.randn(16, 1)
    for step in range(steps):
        if step == WARMUP + 1:
            started = time.perf_counter()
        for micro in range(micro_batches):
            last = micro == micro_batches - 1
            with model.no_sync() if not last else contextlib.nullcontext():
                loss = ((model(x) - y) ** 2).mean()
                if rank == 1:
                    time.sleep(delay_s)
                loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return meter, (time.perf_counter() - started) / (steps - WARMUP - 1)


def ddp_scenarios(rank: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    meter, wall_s = timed_steps(DistributedDataParallel(mlp()), rank, delay_s=DELAY_S)
    out["timed"] = {"metrics": meter.metrics(), "wall_s": wall_s}
    accum, _ = timed_steps(DistributedDataParallel(mlp()), rank, delay_s=0.0, micro_batches=2)
    out["accum_points"] = [p.accum_steps for p in accum.points()]
    out["noise"] = train_regression(DistributedDataParallel(regression_model(
        torch.randn(DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64))),
        {}, rank, micro_batches=1, batch=16).metrics()
    model = DistributedDataParallel(mlp())
    StepMeter(model, torch.optim.SGD(model.parameters(), lr=0.1), local_batch_size=16,
              enabled=False)
    out["hooks_when_off"] = len(model._comm_hooks) + len(model._forward_hooks)
    return out


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        result = ddp_scenarios(rank)
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory) -> list[dict[str, Any]]:
    """Both ranks' results of :func:`ddp_scenarios` on a 2-process gloo group."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(ddp_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_two_replicas_the_waiting_rank_reports_the_delay_as_sync(two_replicas):
    waiting, late = (r["timed"]["metrics"] for r in two_replicas)
    # Rank 0's backward is done early and waits DELAY_S in the all-reduce for rank 1;
    # rank 1 spends DELAY_S before its backward (compute) and then barely waits.
    assert 0.8 * DELAY_S < waiting["sync_time_s"] < 1.5 * DELAY_S
    assert waiting["compute_time_s"] < 0.5 * DELAY_S
    assert 0 < late["sync_time_s"] < 0.3 * DELAY_S
    assert late["compute_time_s"] > DELAY_S
    for result in two_replicas:
        m = result["timed"]["metrics"]
        assert m["step_time_s"] == pytest.approx(result["timed"]["wall_s"], rel=0.05)
        assert m["compute_time_s"] + m["sync_time_s"] == pytest.approx(m["step_time_s"])
        assert m["accum_steps"] == 1
        assert m["samples_per_s"] == pytest.approx(2 * 16 / m["step_time_s"])


def test_two_replicas_accumulation_is_counted_and_switching_off_adds_no_hook(
        two_replicas):
    for result in two_replicas:
        assert result["accum_points"] == [2]
        assert result["hooks_when_off"] == 0


def test_two_replicas_measure_the_noise_scale_within_25_percent(two_replicas):
    for result in two_replicas:
        assert result["noise"]["noise_scale"] == pytest.approx(TRUE_NOISE_SCALE, rel=0.25)
    # Every rank folds in the same statistics: they agree.
    assert two_replicas[0]["noise"]["noise_scale"] == pytest.approx(
        two_replicas[1]["noise"]["noise_scale"], rel=1e-9)


def test_one_worker_has_no_sync_and_its_step_is_its_wall_time():
    meter, wall_s = timed_steps(mlp(), rank=0, delay_s=0.0, steps=60)
    m = meter.metrics()
    assert m["sync_time_s"] == 0.0
    assert m["compute_time_s"] == m["step_time_s"]
    assert m["step_time_s"] == pytest.approx(wall_s, rel=0.05)
    assert m["noise_scale"] is None  # one gradient per step: nothing to compare it with
    (point,) = meter.points()
    assert (point.num_replicas, point.num_nodes, point.local_bsz, point.sync_time_s) == (
        1, 1, 16, 0.0)
    assert fit_throughput([point]).alpha_c > 0


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_one_worker_with_micro_batches_measures_the_noise_scale_within_25_percent(
        micro_batches):
    w_star = torch.randn(DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    meter = train_regression(regression_model(w_star), {}, 0, micro_batches=micro_batches,
                             batch=32 // micro_batches)
    m = meter.metrics()
    assert m["noise_scale"] == pytest.approx(TRUE_NOISE_SCALE, rel=0.25)
    assert m["accum_steps"] == micro_batches


def test_one_worker_samples_the_micro_batch_norms_within_the_budget():
    w_star = torch.randn(DIM, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    every = train_regression(regression_model(w_star), {}, 0, micro_batches=2, batch=16)
    assert every.metrics()["noise_scale"] is not None
    assert every.noise.num_updates == NOISE_STEPS
    # A 10-weight model: its norms cost a good share of its tiny step, so most steps skip them.
    budgeted = train_regression(regression_model(w_star), {"noise_budget": 0.01}, 0,
                                micro_batches=2, batch=16)
    assert budgeted.metrics()["accum_steps"] == 2
    assert 0 < budgeted.noise.num_updates < NOISE_STEPS // 2


def test_switching_measurement_off_registers_no_hooks():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    meter = StepMeter(model, optimizer, local_batch_size=16, enabled=False)
    assert all(p._backward_hooks in (None, {}) for p in model.parameters())
    assert not optimizer._optimizer_step_post_hooks
    assert not StepMeter(model, local_batch_size=16, enabled=False).enabled
    assert not optimizer_module._global_optimizer_post_hooks
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    assert meter.metrics() == {} and meter.points() == []
    # On, then closed: the hooks come and go.
    meter = StepMeter(model, optimizer, local_batch_size=16)
    assert all(p._backward_hooks for p in model.parameters())
    assert optimizer._optimizer_step_post_hooks
    meter.close()
    assert all(p._backward_hooks in (None, {}) for p in model.parameters())
    assert not optimizer._optimizer_step_post_hooks


def test_attached_to_the_model_alone_it_times_the_steps_of_any_optimizer():
    model = mlp()
    meter = StepMeter(model, local_batch_size=8, warmup_steps=1)
    optimizer = torch.optim.Adam(model.parameters())  # made after the meter, as users do
    for _ in range(4):
        for _ in range(3):
            model(torch.randn(8, 32)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    meter.close()
    assert not optimizer_module._global_optimizer_post_hooks
    (point,) = meter.points()
    assert (point.accum_steps, point.local_bsz) == (3, 8)
    assert meter.metrics()["noise_scale"] is not None


def test_a_discarded_step_is_not_timed_and_state_survives_a_restart():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    meter = StepMeter(model, optimizer, local_batch_size=16, warmup_steps=0)
    x = torch.randn(16, 32)
    for step in range(6):
        if step == 1:
            started = time.perf_counter()  # the first step ends here: steps 2..6 are timed
        if step == 3:
            time.sleep(0.5)  # a checkpoint between two steps
            meter.discard_step()
        model(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    wall_s = time.perf_counter() - started
    # The four steps kept fit in the wall time without the checkpoint's half second.
    assert 4 * meter.metrics()["step_time_s"] <= wall_s - 0.5
    back = StepMeter(mlp(), optimizer, local_batch_size=32)
    back.load_state(meter.state())
    assert [p.local_bsz for p in back.points()] == [16]
    assert back.points() == meter.points()
