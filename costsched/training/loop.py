"""The training loop one worker runs, written against a small :class:`Session`.

The Ray layer implements ``Session`` with Ray Train (dataset shards, reports,
checkpoints, DDP); tests implement it in-process. The loop itself never
imports ``ray``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from costsched.compression import distillation_loss
from costsched.config.job import JobConfig
from costsched.cost.accounting import ATTEMPT_KEY, CHECKPOINTED_KEY, WORLD_SIZE_KEY, cost_so_far_usd
from costsched.cost.prices import JobRate
from costsched.training.optim import build_optimizer, build_scheduler, configure_precision
from costsched.training.schedule import BatchPlan
from costsched.training.state import Progress, load_state, save_state

STOP_NONE, STOP_BUDGET, STOP_TARGET, STOP_REQUESTED = 0, 1, 2, 3
OUTCOMES = {STOP_NONE: "COMPLETED", STOP_BUDGET: "BUDGET_EXHAUSTED", STOP_TARGET: "TARGET_REACHED",
            STOP_REQUESTED: "STOPPED"}
STOP_POLL_STEPS = 5
"""Steps between checks for an outside stop request (a preemption, a resize): the
ranks agree on it with one broadcast, then checkpoint at once and end."""


class Session(Protocol):
    """What the loop needs from its runtime."""

    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]: ...
    def latest_checkpoint(self) -> contextlib.AbstractContextManager[str | None]: ...
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...
    def broadcast(self, value: int) -> int: ...
    def stop_requested(self) -> str | None:
        """The outcome an outside stop request asks for (read on rank 0), or None."""
        ...


@dataclass(frozen=True, kw_only=True)
class TrainSpec:
    """A job plus what the driver measured before launching it."""

    job: JobConfig
    model_factory: Callable[[], nn.Module]
    """Builds the (possibly compressed) model, identically on every worker."""
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_train_rows: int
    rate: JobRate
    """The job's price (one accelerator's share of its node), from :func:`rate_of_job`."""
    run_started_at: float
    """When this driver session of the run started (the ledger's interval start)."""
    usd_before_start: float = 0.0
    """What the ledger holds for the run from earlier driver sessions (a resumed sweep)."""
    teacher_factory: Callable[[], nn.Module | None] | None = None
    """Builds the distillation teacher, or returns None when there is none."""


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device) -> float:
    """Accuracy of ``model`` on ``(x, y)``, in eval mode, batch 1024."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(x), 1024):
            # Copies: arrays shipped through Ray's object store are read-only.
            xb = torch.tensor(x[i : i + 1024], device=device)
            yb = torch.tensor(y[i : i + 1024])
            correct += int((model(xb).argmax(1).cpu() == yb).sum())
    model.train(was_training)
    return correct / max(1, len(x))


class Trainer:
    """Runs one attempt of a job on one worker, resuming from the latest checkpoint."""

    def __init__(self, spec: TrainSpec, session: Session, clock: Callable[[], float] = time.time):
        self.spec, self.session, self.clock = spec, session, clock
        cfg = spec.job.training
        torch.manual_seed(cfg.seed)
        self.autocast_dtype = configure_precision(cfg, session.device)
        self.model = session.prepare_model(spec.model_factory())
        self.teacher = spec.teacher_factory() if spec.teacher_factory else None
        if self.teacher is not None:
            self.teacher.to(session.device)
        self.raw_model = getattr(self.model, "module", self.model)
        self.optimizer = build_optimizer(spec.job.optimizer, self.raw_model.parameters())
        self.plan = BatchPlan(
            global_batch_size=cfg.global_batch_size, world_size=session.world_size,
            rank=session.rank, micro_batch_size=cfg.micro_batch_size,
        )
        self.steps_per_epoch = self.plan.steps_per_epoch(spec.num_train_rows)
        total_steps = cfg.num_epochs * max(1, spec.num_train_rows // cfg.global_batch_size)
        self.scheduler = build_scheduler(spec.job.optimizer, self.optimizer, total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.progress = Progress(wall_time=spec.run_started_at,
                                 usd_at_checkpoint=spec.usd_before_start)
        self.resumed_from_step: int | None = None
        with session.latest_checkpoint() as directory:
            if directory is not None:
                self.progress, _ = load_state(
                    directory, model=self.raw_model, optimizer=self.optimizer,
                    scheduler=self.scheduler, scaler=self.scaler,
                )
                self.resumed_from_step = self.progress.global_step
        if self.progress.wall_time < spec.run_started_at:
            # Saved by an earlier driver session: the ledger already charged everything
            # up to that session's end, and nothing ran in between.
            self.progress.usd_at_checkpoint = spec.usd_before_start
            self.progress.wall_time = spec.run_started_at
        self.attempt_started_at = self.clock()
        self.stop_outcome = OUTCOMES[STOP_REQUESTED]
        self.first_step_at: float | None = None
        self.data_rng = np.random.default_rng([cfg.seed, session.rank, self.progress.global_step])

    # -- cost ---------------------------------------------------------------
    def cost_usd(self) -> float:
        return cost_so_far_usd(
            usd_at_checkpoint=self.progress.usd_at_checkpoint,
            checkpoint_wall_time=self.progress.wall_time, now=self.clock(),
            world_size=self.session.world_size,
            rate=self.spec.rate,
        )

    def accelerator_s(self, usd: float) -> float:
        return self.spec.rate.accelerator_s(usd)

    # -- one optimiser step -------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimiser step over the local batch; returns (loss sum, correct count)."""
        device = self.session.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        slices = self.plan.micro_batches(len(x))
        loss_sum, correct = 0.0, 0
        for i, part in enumerate(slices):
            last = i == len(slices) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else (
                self.model.no_sync()
            )
            with sync, torch.autocast(device.type, dtype=self.autocast_dtype,
                                      enabled=self.autocast_dtype is not None):
                logits = self.model(x[part])
                losses = nn.functional.cross_entropy(logits.float(), y[part], reduction="none")
                loss = self._objective(logits, x[part], y[part], losses) * self.plan.loss_scale
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += float(losses.detach().sum())
            correct += int((logits.argmax(1) == y[part]).sum())
        self._optimizer_step()
        return loss_sum, correct

    def _objective(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                   losses: torch.Tensor) -> torch.Tensor:
        """Sum over the micro batch of the per-sample training loss (with distillation)."""
        if self.teacher is None:
            return losses.sum()
        c = self.spec.job.compression
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        mean = distillation_loss(logits.float(), teacher_logits.float(), y,
                                 temperature=c.distill_temperature, weight=c.distill_weight)
        return mean * len(y)

    def _optimizer_step(self) -> None:
        clip = self.spec.job.optimizer.grad_clip_norm
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip > 0:
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    # -- reporting and checkpoints -----------------------------------------
    def checkpoint_and_report(
        self, metrics: dict[str, Any], stop: int = STOP_NONE, final: bool = False
    ) -> int:
        """Save state (rank 0), report to every rank, and agree on rank 0's stop decision.

        The final report has no next interval, so it never stops for the budget.
        """
        now = self.clock()
        usd = self.cost_usd()
        if stop == STOP_NONE and not final and self.session.rank == 0:
            if self._outside_stop():
                stop = STOP_REQUESTED
            elif self._budget_would_overrun(usd):
                stop = STOP_BUDGET
        stop = self.session.broadcast(stop)
        self.progress.usd_at_checkpoint, self.progress.wall_time = usd, now
        metrics = metrics | self._cost_metrics(usd, now) | {
            CHECKPOINTED_KEY: True, "stop_reason": self._outcome(stop),
        }
        with tempfile.TemporaryDirectory(prefix="costsched-ckpt-") as tmp:
            directory = None
            if self.session.rank == 0:
                save_state(tmp, model=self.raw_model, optimizer=self.optimizer,
                           scheduler=self.scheduler, scaler=self.scaler, progress=self.progress)
                directory = tmp
            self.session.report(metrics, directory)
        return stop

    def _outside_stop(self) -> bool:
        """Rank 0: whether a stop was requested from outside; remembers its outcome."""
        outcome = self.session.stop_requested()
        if outcome:
            self.stop_outcome = outcome
        return bool(outcome)

    def _poll_outside_stop(self) -> bool:
        """Every rank: rank 0's answer to :meth:`_outside_stop`, agreed by broadcast."""
        requested = self.session.rank == 0 and self._outside_stop()
        return self.session.broadcast(STOP_REQUESTED if requested else STOP_NONE) != STOP_NONE

    def _outcome(self, stop: int) -> str:
        return self.stop_outcome if stop == STOP_REQUESTED else OUTCOMES[stop]

    def _budget_would_overrun(self, usd: float) -> bool:
        """Stop now if running to the next checkpoint could cross the budget."""
        elapsed = max(1e-9, self.clock() - self.attempt_started_at)
        steps = max(1, self.progress.global_step - (self.resumed_from_step or 0))
        usd_per_step = self.spec.rate.usd(num_workers=self.session.world_size,
                                          seconds=elapsed) / steps
        # The next report comes at the next checkpoint interval or epoch end, whichever
        # first; stopping then still costs the reserve (evaluation, checkpoint, shutdown).
        steps_ahead = min(self.spec.job.checkpoint.interval_steps, self.steps_per_epoch)
        reserve = self.spec.rate.usd(num_workers=self.session.world_size,
                                     seconds=self.spec.job.cost.stop_reserve_s)
        return usd + usd_per_step * steps_ahead + reserve > self.spec.job.cost.budget_usd

    def _cost_metrics(self, usd: float, now: float) -> dict[str, Any]:
        return {
            "cost_usd": usd, "accelerator_s": self.accelerator_s(usd), "wall_time": now,
            ATTEMPT_KEY: self.attempt_started_at, WORLD_SIZE_KEY: self.session.world_size,
            "global_step": self.progress.global_step, "epoch": self.progress.epoch,
            "resumed_from_step": -1 if self.resumed_from_step is None else self.resumed_from_step,
            "first_step_at": self.first_step_at or -1.0,
            "total_steps": self.spec.job.training.num_epochs * self.steps_per_epoch,
        }

    # -- the loop ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.spec.job.training
        stop = STOP_NONE
        while self.progress.epoch < cfg.num_epochs and stop == STOP_NONE:
            stop = self.run_epoch()
        if stop == STOP_REQUESTED:  # checkpointed already; whoever asked is waiting
            last = dict(self.progress.history[-1]) if self.progress.history else {}
            return last | {"stop_reason": self.stop_outcome}
        test_acc = evaluate(self.raw_model, self.spec.x_test, self.spec.y_test, self.session.device)
        final = dict(self.progress.history[-1]) if self.progress.history else {}
        final |= {"test_accuracy": test_acc, "final": True,
                  "usd_to_target": self.progress.usd_to_target,
                  "history": list(self.progress.history)}
        if stop == STOP_NONE and cfg.target_metric == "test_accuracy":
            stop = STOP_TARGET if test_acc >= cfg.target_value else STOP_NONE
        self.checkpoint_and_report(final, stop=stop, final=True)
        return final | {"stop_reason": self._outcome(stop)}

    def run_epoch(self) -> int:
        epoch, interval = self.progress.epoch, self.spec.job.checkpoint.interval_steps
        started, samples, loss_sum, correct = self.clock(), 0, 0.0, 0
        batch_size = self.plan.local_batch_size
        for b, (x, y) in enumerate(self.session.train_batches(epoch, batch_size)):
            if b < self.progress.batch_in_epoch or b >= self.steps_per_epoch:
                continue  # consumed so every shard stays in step; trained on already or spare
            x = self._augment(x)
            step_loss, step_correct = self.train_step(x, y)
            if self.first_step_at is None:
                self.first_step_at = self.clock()
            loss_sum, correct = loss_sum + step_loss, correct + step_correct
            samples += len(y)
            self.progress.global_step += 1
            self.progress.batch_in_epoch = b + 1
            if self.progress.global_step % interval == 0:
                stop = self.checkpoint_and_report({"loss": loss_sum / max(1, samples)})
                if stop:
                    return stop
            elif self.progress.global_step % STOP_POLL_STEPS == 0 and self._poll_outside_stop():
                return self.checkpoint_and_report({"loss": loss_sum / max(1, samples)},
                                                  stop=STOP_REQUESTED)
        return self.end_epoch(started, samples, loss_sum, correct)

    def end_epoch(self, started: float, samples: int, loss_sum: float, correct: int) -> int:
        cfg = self.spec.job.training
        seconds = max(1e-9, self.clock() - started)
        val_acc = evaluate(self.raw_model, self.spec.x_val, self.spec.y_val, self.session.device)
        self.progress.epoch += 1
        self.progress.batch_in_epoch = 0
        metrics: dict[str, Any] = {"val_accuracy": val_acc, "lr": self.scheduler.get_last_lr()[0]}
        if samples:  # none when a resume landed on the epoch's end: nothing to average
            metrics |= {
                "loss": loss_sum / samples, "train_accuracy": correct / samples,
                "samples_per_s": samples * self.session.world_size / seconds,
            }
        stop = STOP_NONE
        if cfg.target_metric == "val_accuracy" and val_acc >= cfg.target_value:
            stop = STOP_TARGET
            if self.progress.usd_to_target is None:
                self.progress.usd_to_target = self.cost_usd()
        metrics["usd_to_target"] = self.progress.usd_to_target
        self.progress.history.append(
            {k: v for k, v in metrics.items() if v is not None} | {"epoch": self.progress.epoch}
        )
        return self.checkpoint_and_report(metrics, stop=stop)

    def _augment(self, x: Any) -> torch.Tensor:
        aug = self.spec.job.dataset.augment
        if aug.noise_std == 0 and aug.max_shift == 0:
            return torch.as_tensor(x)
        from costsched.training.data import augment

        return torch.as_tensor(augment(np.asarray(x), aug, self.data_rng))
