"""The engine behind :mod:`costsched.api`: one worker's view of a run (pure; no Ray).

A :class:`Run` wraps a :class:`Session` (Ray Train in production, an in-process
fake in tests) and adds what every entrypoint gets for free: the run's cost so
far, checkpoints that carry it, a stop flag agreed on by every rank (an outside
stop request such as a preemption or resize, the budget, or the target), and the
dollars it took to reach the target.

Cost so far is the ledger's rule, computed on the worker::

    usd = usd_at_checkpoint + rate.usd(world_size, now - checkpoint_wall_time)

so the time between the newest checkpoint and a restart is paid for too.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from costsched.config.job import JobConfig
from costsched.cost.accounting import ATTEMPT_KEY, CHECKPOINTED_KEY, WORLD_SIZE_KEY, cost_so_far_usd
from costsched.cost.prices import JobRate
from costsched.goodput.restart import PHASE_KEYS, StartMarks, worker_phases
from costsched.training.schedule import lr_scale
from costsched.training.state import RUN_META_KEY, STATE_FILE, checkpoint_name

STOP_POLL_STEPS = 5
"""Calls of :meth:`Run.should_stop` between checks for an outside stop request (a
preemption, a resize): the ranks agree on it with one broadcast."""
COMPLETED, STOPPED = "COMPLETED", "STOPPED"
BUDGET_EXHAUSTED, TARGET_REACHED = "BUDGET_EXHAUSTED", "TARGET_REACHED"
OUTCOME_CODES = {None: 0, BUDGET_EXHAUSTED: 1, TARGET_REACHED: 2, STOPPED: 3}
OUTCOME_NAMES = {code: name for name, code in OUTCOME_CODES.items()}
RUN_METRIC_KEYS = frozenset({
    "cost_usd", "accelerator_s", "wall_time", ATTEMPT_KEY, WORLD_SIZE_KEY, "resumed_from_step",
    "first_step_at", "global_step", CHECKPOINTED_KEY, "stop_reason", "usd_to_target", "final",
    "num_nodes", "local_bsz", "step_time_s", "compute_time_s", "sync_time_s", "accum_steps",
    "grad_sqr", "grad_var"})
"""Keys costsched adds to every report (the rest are the entrypoint's own)."""


class Session(Protocol):
    """What a run needs from its runtime."""

    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module, **strategy_kwargs: Any) -> nn.Module: ...
    def prepare_data_loader(self, loader: Any) -> Any: ...
    def dataset_shard(self, name: str) -> Any: ...
    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]: ...
    def latest_checkpoint(self) -> contextlib.AbstractContextManager[str | None]: ...
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None,
               name: str | None = None) -> None:
        """Report; with ``checkpoint_dir``, persist it as the run's checkpoint ``name``."""
        ...
    def broadcast(self, value: int) -> int: ...
    def stop_requested(self) -> str | None:
        """The outcome an outside stop request asks for (read on rank 0), or None."""
        ...


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """What the driver tells every worker about the run."""

    job: JobConfig
    rate: JobRate
    """The job's price (from :func:`~costsched.cost.prices.rate_of_job`)."""
    run_started_at: float
    """When this driver session of the run started (the ledger's interval start)."""
    usd_before_start: float = 0.0
    """What the ledger holds for the run from earlier driver sessions (a resumed sweep)."""
    entrypoint_config: dict[str, Any] = field(default_factory=dict)
    """The mapping the entrypoint is called with."""
    batch_size: int | None = None
    """The global batch the scheduler chose for an adaptive job (None: the config's)."""
    start_marks: StartMarks = field(default_factory=StartMarks)
    """When the scheduler asked for this (re)start and what the driver did before the
    workers (the restart cost's first phases)."""

    @property
    def global_batch_size(self) -> int:
        """The global batch of this run: the scheduler's choice, else the config's."""
        return self.batch_size or self.job.training.global_batch_size

    @property
    def lr_scale(self) -> float:
        """Learning-rate factor for :attr:`global_batch_size` over the configured batch,
        by the job's ``training.lr_scaling`` rule (1 at the configured batch)."""
        training = self.job.training
        return lr_scale(self.global_batch_size, training.global_batch_size,
                        training.lr_scaling)


@dataclass(kw_only=True)
class RunMeta:
    """What a checkpoint records about the run, beside the entrypoint's own state."""

    sequence: int = 0
    """Checkpoints saved so far in the run (orders them across restarts)."""
    global_step: int = 0
    """The ``global_step`` last reported, when the entrypoint reports one."""
    usd_at_checkpoint: float = 0.0
    """Cumulative dollars when the checkpoint was saved."""
    wall_time: float = 0.0
    """Unix time when it was saved (or the run started)."""
    usd_to_target: float | None = None
    """Dollars spent when the target was first reached."""
    measure: dict[str, Any] | None = None
    """The step meter's state (per-configuration means, noise statistics)."""


MEASURED_KEYS = ("step_time_s", "compute_time_s", "sync_time_s", "accum_steps",
                 "samples_per_s", "grad_sqr", "grad_var", "noise_scale")
"""What a step meter adds to each report (when it has measured it)."""


class Run:
    """One worker's run: cost, checkpoints with it, and the agreed stop flag."""

    def __init__(self, spec: RunSpec, session: Session,
                 clock: Callable[[], float] = time.time):
        self.spec, self.session, self.clock = spec, session, clock
        self.meta = RunMeta(usd_at_checkpoint=spec.usd_before_start,
                            wall_time=spec.run_started_at)
        self.attempt_started_at = clock()
        self.resumed_from_step: int | None = None
        self.first_step_at: float | None = None
        self.outcome: str | None = None
        self._calls = 0
        self.model: nn.Module | None = None
        self.meter: Any = None
        self._meter_state: dict[str, Any] | None = None
        self._gaps_s: list[float] = []
        self.last_metrics: dict[str, Any] = {}
        self.closed = False
        self._requested: str | None = None
        self._last_report_at = self.attempt_started_at
        self._marks: dict[str, float] = {"restore_s": 0.0}
        """When this attempt first ran forward and finished a step, and its restore time."""
        self._hooks: list[Any] = []

    # -- cost ------------------------------------------------------------------------
    def cost_usd(self) -> float:
        return cost_so_far_usd(usd_at_checkpoint=self.meta.usd_at_checkpoint,
                               checkpoint_wall_time=self.meta.wall_time, now=self.clock(),
                               world_size=self.session.world_size, rate=self.spec.rate)

    # -- model and measurement ---------------------------------------------------------
    def prepare_model(self, model: nn.Module, **strategy_kwargs: Any) -> nn.Module:
        self.model = self.session.prepare_model(model, **strategy_kwargs)
        if not self._hooks:  # mark this attempt's first forward pass and optimiser step
            self._hooks = [self.model.register_forward_pre_hook(self._first_forward),
                           register_optimizer_step_post_hook(
                               self._first_step)]
        return self.model

    def _first_forward(self, *_: Any) -> None:
        if torch.is_grad_enabled():  # an evaluation before training is not the step
            self._marks.setdefault("first_forward_at", self.clock())
            self._hooks[0].remove()

    def _first_step(self, *_: Any) -> None:
        if "first_forward_at" in self._marks:
            self._marks["first_step_at"] = self.clock()
            self._hooks[1].remove()

    def restart_phases(self) -> dict[str, float]:
        """This attempt's start-up by phase (:mod:`costsched.goodput.restart`), once its
        first step is done; empty before."""
        marks = self._marks
        if "first_step_at" not in marks:
            return {}
        phases = worker_phases(
            marks=self.spec.start_marks, run_started_at=self.spec.run_started_at,
            entered_at=self.attempt_started_at,
            restore_s=marks["restore_s"], first_forward_at=marks["first_forward_at"],
            first_step_at=marks["first_step_at"])
        return {PHASE_KEYS[phase]: seconds for phase, seconds in phases.items()}

    def measure_steps(self, optimizer: torch.optim.Optimizer, *, local_batch_size: int) -> None:
        """Attach a step meter (:mod:`costsched.goodput.measure`) to the prepared model and
        ``optimizer``; its figures go with every report and its state with checkpoints.
        Off (no hooks) when the job's ``training.measure_steps`` is false."""
        from costsched.goodput.measure import StepMeter

        if self.model is None:
            raise RuntimeError("call costsched.api.prepare_model before prepare_optimizer")
        if self.meter is not None:  # DDP takes one communication hook per model
            self.meter.local_batch_size = local_batch_size
            return
        self.meter = StepMeter(self.model, optimizer, local_batch_size=local_batch_size,
                               num_nodes=getattr(self.session, "num_nodes", 1),
                               enabled=self.spec.job.training.measure_steps)
        if self._meter_state:
            self.meter.load_state(self._meter_state)

    def _measured(self) -> dict[str, Any]:
        if self.meter is None or not self.meter.enabled:
            return {}
        figures = {k: v for k, v in self.meter.metrics().items()
                   if k in MEASURED_KEYS and v is not None}
        if "step_time_s" not in figures:
            return figures
        return figures | {"num_nodes": self.meter.num_nodes,
                          "local_bsz": self.meter.local_batch_size}

    # -- checkpoints -----------------------------------------------------------------
    def load_checkpoint(self, *, weights_only: bool = True) -> dict[str, Any] | None:
        """The entrypoint's state from the newest checkpoint, on CPU; None on a fresh run."""
        started = self.clock()
        with self.session.latest_checkpoint() as directory:
            if directory is None:
                return None
            payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu",
                                 weights_only=weights_only)
        self._marks["restore_s"] += self.clock() - started
        saved = RunMeta(**payload.pop(RUN_META_KEY, {}))
        self.resumed_from_step = saved.global_step
        self._meter_state = saved.measure
        if self.meter is not None and saved.measure:
            self.meter.load_state(saved.measure)
        if saved.wall_time >= self.spec.run_started_at:
            self.meta = saved
        else:
            # Saved by an earlier driver session: the ledger already charged everything
            # up to that session's end, and nothing ran in between.
            self.meta = RunMeta(sequence=saved.sequence, global_step=saved.global_step,
                                usd_at_checkpoint=self.spec.usd_before_start,
                                wall_time=self.spec.run_started_at,
                                usd_to_target=saved.usd_to_target, measure=saved.measure)
        return payload

    # -- reports -----------------------------------------------------------------------
    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None, *,
               final: bool = False) -> None:
        """Report on every rank; with ``checkpoint``, rank 0 saves it with the run's meta.
        Rank 0 decides whether the run stops (an outside request, the budget, the target)
        and every rank learns it: :meth:`should_stop` answers True from then on. The
        ``final`` report ends the run and never stops it for the budget."""
        now = self.clock()
        if "global_step" in metrics:
            self.meta.global_step = int(metrics["global_step"])
            if self.first_step_at is None and self.meta.global_step > (
                    self.resumed_from_step or 0):
                self.first_step_at = now
        usd = self.cost_usd()
        if self.outcome is None:
            self._agree(self._rank0_proposal(metrics, usd, now, final)
                        if self.session.rank == 0 else None)
        if self.outcome == TARGET_REACHED and self.meta.usd_to_target is None:
            self.meta.usd_to_target = usd
        metrics = self._measured() | self.restart_phases() | metrics | self._cost_metrics(
            usd, now) | {
            "stop_reason": self.outcome or COMPLETED, "usd_to_target": self.meta.usd_to_target}
        if checkpoint is None:
            self.session.report(metrics, None)
        else:
            self.meta.sequence += 1
            self.meta.usd_at_checkpoint, self.meta.wall_time = usd, now
            if self.meter is not None and self.meter.enabled:
                self.meta.measure = self.meter.state()
            metrics[CHECKPOINTED_KEY] = True
            with tempfile.TemporaryDirectory(prefix="costsched-ckpt-") as tmp:
                directory = None
                if self.session.rank == 0:
                    save_checkpoint(tmp, checkpoint, self.meta)
                    directory = tmp
                self.session.report(metrics, directory, checkpoint_name(self.meta.sequence))
            if self.meter is not None and self.meter.enabled:
                self.meter.discard_step()  # the save is not a training step
        self._gaps_s.append(max(now - self._last_report_at, 0.0))
        self._last_report_at = now
        self.last_metrics, self.closed = metrics, final

    def close(self) -> None:
        """After the entrypoint returns: a closing report carrying its last metrics, so
        the run's outcome and cost are recorded even when it never said it was done."""
        if not self.closed:
            keep = {k: v for k, v in self.last_metrics.items() if k != CHECKPOINTED_KEY}
            self.report(keep | {"final": True}, final=True)
        for hook in self._hooks:
            hook.remove()

    def should_stop(self) -> bool:
        """Whether the run must end now: save a checkpoint (:meth:`report` with one) and
        return. Call it at the same points on every rank: every
        :data:`STOP_POLL_STEPS`-th call agrees by broadcast on an outside stop request."""
        self._calls += 1
        if self.outcome is None and self._calls % STOP_POLL_STEPS == 0:
            self._agree(self._outside_stop() if self.session.rank == 0 else None)
        return self.outcome is not None

    def _rank0_proposal(self, metrics: dict[str, Any], usd: float, now: float,
                        final: bool) -> str | None:
        training = self.spec.job.training
        value = metrics.get(training.target_metric) if training.target_metric else None
        if value is not None and value >= training.target_value:
            return TARGET_REACHED
        if final:
            return None
        return self._outside_stop() or (
            BUDGET_EXHAUSTED if self._budget_would_overrun(usd, now) else None)

    def _outside_stop(self) -> str | None:
        """Rank 0: STOPPED when a stop was requested from outside; keeps its outcome."""
        requested = self.session.stop_requested()
        if requested:
            self._requested = requested
        return STOPPED if requested else None

    def _agree(self, proposed: str | None) -> None:
        """Every rank takes rank 0's proposal (one broadcast)."""
        code = self.session.broadcast(OUTCOME_CODES[proposed])
        if code:
            kind = OUTCOME_NAMES[code]
            self.outcome = (self._requested or STOPPED) if kind == STOPPED else kind

    def _budget_would_overrun(self, usd: float, now: float) -> bool:
        """Stop now if running to the next report, then stopping, could cross the budget:
        usd + rate(W) x (typical gap between reports + stop_reserve_s) > budget_usd,
        the typical gap being the median of this attempt's gaps so far (this one too)."""
        gaps = sorted([*self._gaps_s, max(now - self._last_report_at, 0.0)])
        ahead_s = gaps[len(gaps) // 2] + self.spec.job.cost.stop_reserve_s
        ahead = self.spec.rate.usd(num_workers=self.session.world_size, seconds=ahead_s)
        return usd + ahead > self.spec.job.cost.budget_usd

    def _cost_metrics(self, usd: float, now: float) -> dict[str, Any]:
        return {
            "cost_usd": usd, "accelerator_s": self.spec.rate.accelerator_s(usd),
            "wall_time": now, ATTEMPT_KEY: self.attempt_started_at,
            WORLD_SIZE_KEY: self.session.world_size,
            "resumed_from_step": -1 if self.resumed_from_step is None else self.resumed_from_step,
            "first_step_at": self.first_step_at or -1.0,
        }


def run_outcome(metrics: dict[str, Any], stop_requested: str | None) -> str:
    """A finished run's outcome from the last report its trainer passed on.

    Every report carries ``stop_reason`` (COMPLETED until the run decides otherwise); a
    run's last report is marked ``final`` when it ran to its end. A run that was asked
    to stop (``stop_requested``: the outcome the stop asks for) and whose last passed-on
    report is neither final nor a decided stop ended on that stop: under load the
    trainer can end before the stopping report reaches its result."""
    outcome = metrics.get("stop_reason") or COMPLETED
    if outcome == COMPLETED and stop_requested and not metrics.get("final"):
        return stop_requested
    return outcome


def save_checkpoint(directory: str, state: dict[str, Any], meta: RunMeta) -> Path:
    """Write ``state`` plus the run's meta as one ``state.pt`` (temp file, then rename)."""
    from dataclasses import asdict

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(dict(state) | {RUN_META_KEY: asdict(meta)}, tmp)
    tmp.replace(path / STATE_FILE)
    return path / STATE_FILE
