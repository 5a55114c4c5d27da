"""Goodput measured in every job, as AdaptDL does: step time split into compute and
gradient sync, micro-batches per step, and the gradient noise scale. Pure: no ``ray``.

A :class:`StepMeter` is attached to the model ``prepare_model`` returns (DDP when
there are several workers, the plain module otherwise) and to its optimizer. Per step:

    T_step    = wall time from the previous optimizer.step() to this one,
    T_sync    = gradient synchronisation the step waited for (0 with one worker),
    T_compute = T_step - T_sync      (forward, backward, optimizer, data loading),
    a         = backward passes since the previous step (the accumulation steps),

filed under ``(num_workers, num_nodes, local_batch_size, a)``; each key keeps the mean
of its steps past the first ``warmup_steps`` of a stretch on it (restart, DDP's bucket
rebuild, caches), as points for :func:`~costsched.goodput.throughput.fit_throughput`.

T_sync. DDP launches one all-reduce per gradient bucket, in bucket order, as soon as
its local gradients are ready; the backward pass's last callback waits for them all
and copies the averaged buckets into ``.grad``. The meter's communication hook (DDP's
default all-reduce, wrapped) marks the last bucket's launch (every local gradient is
ready: compute is over), a callback queued behind DDP's marks the end of that wait;
T_sync is the time between: communication not hidden behind compute, plus the copy
(AdaptDL's measure). Marks are ``perf_counter`` readings on CPU (gloo), CUDA events
on the backward pass's stream on GPUs (device time). No Python runs on the
communication thread.

The noise scale (:mod:`costsched.goodput.noise`) needs n >= 2 gradients g_i of b
examples each, ``mean_i |g_i|^2`` and ``|mean_i g_i|^2``:

* DDP, R replicas: each bucket's squared norm in the hook (local) and after DDP's wait
  (the mean); one asynchronous all-reduce per ``flush_steps`` steps sums the local
  squares over the replicas. n = R, b = local_batch_size * a.
* One worker, a >= 2 micro-batches d_1 .. d_a, no gradient copied: as backward pass 2
  starts, ``.grad`` holds d_1 (one fused norm); each parameter's hook sees its part of
  d_k (k >= 2) before it is added in; after pass a, ``.grad`` holds the sum (one fused
  norm): ``mean_k |d_k|^2`` and ``|mean_k d_k|^2 = |d_1 + .. + d_a|^2 / a^2``; n = a,
  b = local_batch_size. Sampled on as many steps as ``noise_budget`` (a share of the
  step time, host-measured) allows: every step unless the model is tiny.
* One worker, a = 1: one gradient says nothing; the noise metrics are None.

Assumed: ``.grad`` zeroed between steps, micro-batches of equal size, dense gradients.
Norms are taken as backpropagated (before clipping or unscaling): the noise scale
ignores a constant loss scale. A step that synchronises on several backward passes
(no ``no_sync``) is timed but gives no noise sample.

Backward passes are counted by the first hook each fires (a queued callback ends it):
on the tensors DDP's forward returns (nested tuples, lists, mappings), as every pass
goes through it; on each parameter of a plain module, so methods other than
``forward`` count too. Cost: a Python call per output or parameter per pass, one per
bucket and per step; ``enabled=False`` registers nothing. Steps are folded in
``flush_steps`` at a time, a batch late, so the device is not waited for every step.
Under DDP every rank attaches a meter alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel
from torch.optim.optimizer import register_optimizer_step_post_hook

from costsched.goodput.noise import NoiseScaleEstimator
from costsched.goodput.throughput import ThroughputPoint

WARMUP_STEPS = 5
"""Steps dropped at the start of a stretch on one key (restart, bucket rebuild, caches)."""
FLUSH_STEPS = 8
"""Steps folded in together (one device wait and, under DDP, one all-reduce for them)."""
NOISE_BUDGET = 0.01
"""Share of the step time one worker's micro-batch norms may take."""

Key = tuple[int, int, int, int]
"""(num_workers, num_nodes, local_batch_size, accum_steps) of a measured step."""


def _mark(cuda: bool) -> Any:
    """A mark in time: ``perf_counter`` on the host, or a CUDA event on the current
    stream (device time)."""
    if not cuda:
        return time.perf_counter()
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def _seconds(start: Any, end: Any) -> float:
    if isinstance(end, float):
        return end - start
    end.synchronize()
    return start.elapsed_time(end) / 1e3


@dataclass
class _SyncRound:
    """One synchronising backward pass: its buckets (averaged in place by their
    all-reduces), their local squared norms, clock marks of the last launch and of the
    end of DDP's wait, and the averaged gradient's squared norm."""

    local_sqr: list[torch.Tensor] = field(default_factory=list)
    buffers: list[torch.Tensor] = field(default_factory=list)
    launched: Any = None
    done: Any = None
    mean_sqr: torch.Tensor | None = None


@dataclass
class _Step:
    """One optimizer step; ``step_s`` None: not timed (the first, or discarded);
    ``micro``: one worker's (sum_k |d_k|^2, |d_1 + .. + d_a|^2); ``local_mean``: DDP's
    mean over replicas of the local squared norms, once all-reduced."""

    key: Key
    step_s: float | None
    rounds: list[_SyncRound]
    micro: tuple[torch.Tensor, torch.Tensor] | None = None
    local_mean: float | None = None


@dataclass
class _Batch:
    steps: list[_Step]
    local_sums: torch.Tensor | None = None  # DDP: per step, summed over replicas by work
    work: Any = None


@dataclass
class _Mean:
    count: int = 0
    step_s: float = 0.0
    sync_s: float = 0.0


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> of two flat buffers, accumulated in at least float32."""
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return torch.dot(a, b)


@torch.no_grad()
def _sqr_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """|g|^2 of the gradient in the parameters' ``.grad`` (one fused norm)."""
    grads = [p.grad for p in params if p.grad is not None and not p.grad.is_sparse]
    if not grads:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(grads)).square().sum()


def _grad_tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors that require grad in a module's output (nested tuples, lists, mappings)."""
    if isinstance(value, torch.Tensor) and value.requires_grad:
        yield value
    items = value.values() if isinstance(value, Mapping) else value
    for item in items if isinstance(value, Mapping | list | tuple) else ():
        yield from _grad_tensors(item)


def _world_size(model: nn.Module) -> int:
    if isinstance(model, DistributedDataParallel):
        return model.process_group.size()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class StepMeter:
    """Step time, sync time, accumulation steps and gradient noise of one worker's steps.

    ``model``: what ``prepare_model`` returned (DDP takes one communication hook per
    model, for good). ``optimizer``: the one whose ``step()`` ends a step; None: any
    optimizer's in this process. ``local_batch_size``: examples per micro-batch on this
    worker (settable); ``num_nodes``: nodes the workers are on. ``init_batch_size``: the
    noise estimator's B0 (default: a micro-batch on every worker). ``noise_budget``: see
    the module docstring (None: every step). ``enabled=False``: no hooks, empty queries.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 local_batch_size: int, num_nodes: int = 1, init_batch_size: int | None = None,
                 enabled: bool = True, warmup_steps: int = WARMUP_STEPS,
                 flush_steps: int = FLUSH_STEPS, noise_budget: float | None = NOISE_BUDGET,
                 smoothing: float = 0.999) -> None:
        if local_batch_size < 1 or num_nodes < 1 or warmup_steps < 0 or flush_steps < 1:
            raise ValueError("need local_batch_size >= 1, num_nodes >= 1, warmup_steps >= 0 "
                             "and flush_steps >= 1")
        self.enabled = enabled
        self.local_batch_size, self.num_nodes = local_batch_size, num_nodes
        self.warmup_steps, self.flush_steps = warmup_steps, flush_steps
        self.noise_budget = noise_budget
        self._ddp = isinstance(model, DistributedDataParallel)
        self._group = model.process_group if self._ddp else None
        self.num_workers = _world_size(model)
        if num_nodes > self.num_workers:
            raise ValueError(f"num_nodes ({num_nodes}) exceeds the workers ({self.num_workers})")
        # Another wrapper (FSDP) synchronises out of the meter's sight: time steps only.
        self.sync_measured = self._ddp or self.num_workers == 1
        self._micro = not self._ddp and self.num_workers == 1  # noise from micro-batches
        self.noise = NoiseScaleEstimator(
            init_batch_size or self.num_workers * local_batch_size, smoothing)
        self._device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self._cuda = self._device.type == "cuda"
        self._means: dict[Key, _Mean] = {}
        self._pending, self._sent = [], []  # steps, then batches of them being all-reduced
        self._last_key, self._run_length = None, 0
        self._last_step_at: float | None = None
        self._params, self._handles = [], []
        self._reset_step()
        self._sample_noise = True
        self._noise_work_s = self._noise_cost_s = self._since_sample_s = 0.0
        if enabled:
            self._params = [p for p in model.parameters() if p.requires_grad]
            self._handles.append(
                optimizer.register_step_post_hook(self._on_step) if optimizer is not None
                else register_optimizer_step_post_hook(self._on_step))
            if self._ddp:  # every pass goes through DDP's forward: hook its outputs
                self._handles.append(model.register_forward_hook(self._on_forward))
                model.register_comm_hook(None, self._comm_hook)
            else:  # a plain module's methods other than forward count as well
                self._handles += [param.register_hook(self._on_grad) for param in self._params]

    def _reset_step(self) -> None:
        """Empty what one optimizer step gathers."""
        self._backwards, self._in_backward = 0, False  # also after a backward that raised
        self._rounds: list[_SyncRound] = []
        self._first_sqr: torch.Tensor | None = None
        self._sum_sqr: torch.Tensor | None = None
        self._later_norms: list[torch.Tensor] = []

    def close(self) -> None:
        """Remove the hooks; a DDP model keeps its hook, which then only all-reduces."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.enabled = False

    # -- backward passes -----------------------------------------------------------------
    def _on_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            for tensor in _grad_tensors(output):
                tensor.register_hook(self._on_grad)

    def _on_grad(self, grad: torch.Tensor) -> None:
        """Hook on DDP's outputs, or on each parameter of a plain module (run before its
        gradient is added into ``.grad``)."""
        if not self._in_backward:
            self._start_backward()
        if self._micro and self._backwards >= 2 and self._sample_noise and not grad.is_sparse:
            start = time.perf_counter()
            self._later_norms.append(torch.linalg.vector_norm(grad))
            self._noise_work_s += time.perf_counter() - start

    def _start_backward(self) -> None:
        """The first hook of a backward pass: count it, and have it end in a callback."""
        self._in_backward = True
        self._backwards += 1
        torch.autograd.Variable._execution_engine.queue_callback(self._end_backward)
        if self._micro and self._backwards == 2 and self._sample_noise:
            start = time.perf_counter()
            self._first_sqr = _sqr_norm(self._params)  # nothing of pass 2 added yet: d_1
            self._noise_work_s += time.perf_counter() - start

    def _end_backward(self) -> None:
        self._in_backward = False
        if self._micro and self._backwards >= 2 and self._sample_noise:
            start = time.perf_counter()
            self._sum_sqr = _sqr_norm(self._params)  # d_1 + .. + d_k, before any clipping
            self._noise_work_s += time.perf_counter() - start
        elif self._rounds and self._rounds[-1].done is None:
            # DDP queued its own callback (wait for the all-reduces) after this one.
            torch.autograd.Variable._execution_engine.queue_callback(self._after_sync)

    def _after_sync(self) -> None:
        sync = self._rounds[-1]
        sync.done = _mark(self._cuda)
        sync.mean_sqr = torch.stack([_dot(b, b) for b in sync.buffers]).sum()
        sync.buffers = []

    def _comm_hook(self, state, bucket):
        # Not annotated: DDP rejects a hook whose annotations are strings.
        if not self.enabled:
            return allreduce_hook(self._group, bucket)
        if bucket.index() == 0:
            self._rounds.append(_SyncRound())
        sync, buffer = self._rounds[-1], bucket.buffer()
        sync.local_sqr.append(_dot(buffer, buffer))
        sync.buffers.append(buffer)
        if bucket.is_last():
            sync.launched = _mark(self._cuda)
        return allreduce_hook(self._group, bucket)

    # -- optimizer steps -----------------------------------------------------------------
    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        now = time.perf_counter()
        key = (self.num_workers, self.num_nodes, self.local_batch_size, self._backwards)
        timed = self._last_step_at is not None and self._backwards > 0
        step = _Step(key=key, step_s=now - self._last_step_at if timed else None,
                     rounds=self._rounds)
        if self._backwards >= 2 and self._first_sqr is not None and self._sum_sqr is not None:
            later = torch.stack(self._later_norms).square().sum() if self._later_norms else 0.0
            step.micro = (self._first_sqr + later, self._sum_sqr)
            self._noise_cost_s = self._noise_work_s
        self._pending.append(step)
        self._budget_noise(step.step_s)
        self._last_step_at = now
        self._reset_step()
        if len(self._pending) >= self.flush_steps:
            self._fold(self._sent)
            self._sent = [self._send(self._pending)]
            self._pending = []

    def _budget_noise(self, step_s: float | None) -> None:
        """Sample the next step's norms once the steps since the last sample took long
        enough for its cost to be ``noise_budget`` of their time."""
        self._since_sample_s += step_s or 0.0
        self._noise_work_s = 0.0
        self._sample_noise = (self.noise_budget is None
                              or self._since_sample_s * self.noise_budget >= self._noise_cost_s)
        if self._sample_noise:
            self._since_sample_s = 0.0

    def discard_step(self) -> None:
        """Leave the step in progress untimed: call after work that is not training
        (a checkpoint, an evaluation) between two optimizer steps."""
        self._last_step_at = None

    # -- folding steps in ----------------------------------------------------------------
    def _send(self, steps: list[_Step]) -> _Batch:
        """Start summing the steps' local squared norms over the replicas (same steps on
        every rank, so the same all-reduce)."""
        if not self._ddp:
            return _Batch(steps)
        sums = [torch.stack(s.rounds[0].local_sqr).sum() if len(s.rounds) == 1
                else torch.zeros((), device=self._device) for s in steps]
        local_sums = torch.stack(sums).double()
        work = dist.all_reduce(local_sums, group=self._group, async_op=True)
        return _Batch(steps, local_sums, work)

    def _fold(self, batches: list[_Batch]) -> None:
        for batch in batches:
            if batch.work is not None:
                batch.work.wait()
                for step, total in zip(batch.steps, batch.local_sums.tolist(), strict=True):
                    if len(step.rounds) == 1 and step.rounds[0].mean_sqr is not None:
                        step.local_mean = total / self.num_workers
            for step in batch.steps:
                self._fold_noise(step)
                self._fold_time(step)

    def _fold_time(self, step: _Step) -> None:
        if step.step_s is None:
            return
        if step.key != self._last_key:
            self._last_key, self._run_length = step.key, 0
        self._run_length += 1
        if self._run_length > self.warmup_steps:
            mean = self._means.setdefault(step.key, _Mean())
            mean.count += 1
            mean.step_s += step.step_s
            mean.sync_s += min(self._sync_s(step.rounds), step.step_s)

    def _sync_s(self, rounds: list[_SyncRound]) -> float:
        return sum(max(0.0, _seconds(r.launched, r.done))
                   for r in rounds if r.launched is not None and r.done is not None)

    def _fold_noise(self, step: _Step) -> None:
        _, _, bsz, accum = step.key
        if step.micro is not None:
            local, total = float(step.micro[0]) / accum, float(step.micro[1]) / accum**2
            self.noise.update([local] * accum, total, bsz)
        elif step.local_mean is not None:
            total = float(step.rounds[0].mean_sqr)
            self.noise.update([step.local_mean] * self.num_workers, total, bsz * accum)

    def _catch_up(self) -> None:
        """Fold in what is ready without a collective: under DDP the batches already
        sent; with one worker every step."""
        if not self._ddp and self._pending:
            self._sent.append(self._send(self._pending))
            self._pending = []
        self._fold(self._sent)
        self._sent = []

    # -- results -------------------------------------------------------------------------
    def points(self) -> list[ThroughputPoint]:
        """One point per measured key (mean step and sync time), for ``fit_throughput``;
        none when another wrapper than DDP synchronised the gradients."""
        self._catch_up()
        if not self.sync_measured:
            return []
        return [ThroughputPoint(num_nodes=nodes, num_replicas=workers, local_bsz=bsz,
                                accum_steps=accum, step_time_s=m.step_s / m.count,
                                sync_time_s=m.sync_s / m.count)
                for (workers, nodes, bsz, accum), m in sorted(self._means.items())
                if m.count and m.step_s > 0]

    def metrics(self) -> dict[str, float | None]:
        """The means of the latest key's steps and the smoothed noise statistics (None
        where not measured yet, or not measurable); {} when measurement is off. Under
        DDP the newest steps (fewer than ``flush_steps``) are not in yet."""
        self._catch_up()
        if not self.enabled and not self._means:
            return {}
        out: dict[str, float | None] = dict.fromkeys(
            ("step_time_s", "compute_time_s", "sync_time_s", "accum_steps", "samples_per_s"))
        mean = self._means.get(self._last_key) if self._last_key else None
        if mean is not None and mean.count:
            workers, _, bsz, accum = self._last_key
            step, sync = mean.step_s / mean.count, mean.sync_s / mean.count
            out |= {"step_time_s": step, "accum_steps": accum,
                    "samples_per_s": workers * bsz * accum / step}
            if self.sync_measured:
                out |= {"compute_time_s": step - sync, "sync_time_s": sync}
        measured = self.noise.num_updates > 0
        out |= {name: getattr(self.noise, name) if measured else None
                for name in ("grad_sqr", "grad_var", "noise_scale")}
        return out

    # -- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint: the noise statistics and every key's means."""
        self._catch_up()
        return {"noise": self.noise.state(),
                "means": [[*key, m.count, m.step_s, m.sync_s] for key, m in self._means.items()]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state`: earlier configurations stay in :meth:`points`."""
        self.noise = NoiseScaleEstimator.from_state(state["noise"])
        for *key, count, step_s, sync_s in state["means"]:
            self._means[tuple(int(k) for k in key)] = _Mean(int(count), step_s, sync_s)
