"""costsched's training API: run your own PyTorch training code under costsched.

Write one function that takes a mapping and trains, and name it in the job YAML::

    entrypoint: mypackage.train:train_loop      # module:function, importable on workers
    entrypoint_config: {lr: 0.001, seq_len: 64}  # passed to it as a dict

Each worker calls ``train_loop(entrypoint_config)``. Inside it::

    import costsched.api as cs

    def train_loop(config: dict) -> None:
        ctx = cs.get_context()                       # rank, world_size, device, job
        model = cs.prepare_model(build_model())      # DDP (or FSDP), on ctx.device
        loader = cs.prepare_data_loader(loader)      # a DistributedSampler per worker
        optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"])
        state = cs.load_checkpoint()                 # None on a fresh start
        if state:
            model.load_state_dict(state["model"]); optimizer.load_state_dict(state["opt"])
        for step, batch in enumerate(loader, start=state["step"] if state else 0):
            loss = model(batch).mean(); loss.backward(); optimizer.step(); optimizer.zero_grad()
            if step % 50 == 0 or cs.should_stop():   # call both on every rank
                cs.report({"loss": loss.item(), "global_step": step},
                          checkpoint={"model": model.state_dict(),
                                      "opt": optimizer.state_dict(), "step": step})
            if cs.should_stop():                     # preempted, resized, budget, target
                return

What costsched adds to every report: the run's cost so far (``cost_usd``), the
worker count, the outcome it is heading for (``stop_reason``) and the dollars to
the target. When the job has a target (``training.target_metric`` and
``target_value``), a report whose metric reaches it stops the run as
``TARGET_REACHED``. A checkpoint is saved by rank 0 and restored on every rank after
a failure, a preemption or a resize. This module never imports ``ray``: the Ray
layer binds a :class:`~costsched.training.run.Run` to each worker before calling the
entrypoint, and tests bind one in-process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from costsched.config.job import JobConfig
from costsched.training.run import Run

_RUN: Run | None = None


@dataclass(frozen=True, kw_only=True)
class Context:
    """Where this worker is in the run."""

    rank: int
    """This worker's rank, 0 .. world_size - 1."""
    world_size: int
    """Workers in the group now (an elastic job's count changes between restarts)."""
    device: torch.device
    """The device to train on (``cuda:N`` with ``use_gpu``, else ``cpu``)."""
    job: JobConfig
    """The whole job config (name, training target, budget, scaling, ...)."""
    config: dict[str, Any]
    """The job's ``entrypoint_config``."""
    batch_size: int
    """The global batch to train at now: ``training.global_batch_size``, or for a job
    with ``training.adaptive_batch`` the one the scheduler chose for this attempt."""
    lr_scale: float
    """Multiply the learning rate tuned for ``training.global_batch_size`` by this
    (``training.lr_scaling`` rule; 1.0 unless the scheduler changed the batch)."""


@contextlib.contextmanager
def bound(run: Run) -> Iterator[Run]:
    """Make ``run`` the one the API functions act on, for the duration of the block."""
    global _RUN
    previous, _RUN = _RUN, run
    try:
        yield run
    finally:
        _RUN = previous


def _run() -> Run:
    if _RUN is None:
        raise RuntimeError("costsched.api is used outside a costsched run; start the function "
                           "through a job's `entrypoint` (costsched train / submit)")
    return _RUN


def get_context() -> Context:
    run = _run()
    return Context(rank=run.session.rank, world_size=run.session.world_size,
                   device=run.session.device, job=run.spec.job,
                   config=dict(run.spec.entrypoint_config),
                   batch_size=run.spec.global_batch_size, lr_scale=run.spec.lr_scale)


def prepare_model(model: nn.Module, **strategy_kwargs: Any) -> nn.Module:
    """Move ``model`` to this worker's device and wrap it for data parallelism (DDP, or
    FSDP when the job's ``scaling.strategy`` is ``fsdp``); ``strategy_kwargs`` go to
    the wrapper (``DistributedDataParallel`` or ``FullyShardedDataParallel``)."""
    return _run().prepare_model(model, **strategy_kwargs)


def prepare_optimizer(optimizer: torch.optim.Optimizer, *,
                      local_batch_size: int) -> torch.optim.Optimizer:
    """Measure this worker's optimiser steps (returns ``optimizer`` itself): step time,
    gradient sync, accumulation and the gradient noise scale, reported with every
    :func:`report` and used by the scheduler's goodput model. ``local_batch_size``:
    examples per micro-batch on this worker. Call after :func:`prepare_model`."""
    _run().measure_steps(optimizer, local_batch_size=local_batch_size)
    return optimizer


def prepare_data_loader(loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
    """``loader`` with a distributed sampler, so each worker sees its own shard, and
    batches moved to this worker's device."""
    return _run().session.prepare_data_loader(loader)


def get_dataset_shard(name: str = "train") -> Any:
    """This worker's shard of a Ray Data dataset the driver attached (built-in jobs
    get ``train``): an iterator with ``iter_torch_batches``."""
    return _run().session.dataset_shard(name)


def load_checkpoint(*, weights_only: bool = True) -> dict[str, Any] | None:
    """The state saved by the newest :func:`report` with a checkpoint, on CPU; None on
    a fresh run. ``weights_only`` loads tensors and plain containers only, as
    ``torch.load`` does; pass False only for checkpoints you trust."""
    return _run().load_checkpoint(weights_only=weights_only)


def train_batches(epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]:
    """This worker's ``(x, y)`` batches of the ``train`` dataset for ``epoch``,
    reshuffled each epoch by the job's seed; kept in memory after the first pass
    when ``dataset.cache_shard`` is true."""
    return _run().session.train_batches(epoch, batch_size)


def report(metrics: dict[str, Any], *, checkpoint: dict[str, Any] | None = None,
           final: bool = False) -> None:
    """Report ``metrics`` (call on every rank, at the same points); with ``checkpoint``,
    a mapping of tensors and plain values, rank 0 also saves it for resumption.
    ``final`` marks the run's last report: the budget no longer stops it."""
    _run().report(metrics, checkpoint, final=final)


def should_stop() -> bool:
    """True once the run must end: a preemption or resize, the budget, or the target.
    Report a checkpoint and return. Call it at the same points on every rank."""
    return _run().should_stop()


def stop_reason() -> str | None:
    """Why the run is stopping (``TARGET_REACHED``, ``BUDGET_EXHAUSTED``, or the outside
    request such as ``PREEMPTED``); None while it is not."""
    return _run().outcome


def usd_to_target() -> float | None:
    """Dollars the run had cost when it first reached its target; None before."""
    return _run().meta.usd_to_target


def cost_usd() -> float:
    """Dollars this run has cost so far, as the ledger charges it (restarts included)."""
    return _run().cost_usd()
