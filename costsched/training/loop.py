"""The built-in classification loop: an entrypoint written only against :mod:`costsched.api`.

Jobs without an ``entrypoint`` run :func:`train_loop`, which trains the model the
job config describes (``model``, ``compression``) on the dataset the driver
attached (``train``), evaluates on the validation split every epoch and on the
test split at the end, and checkpoints every ``checkpoint.interval_steps``. Its
``config`` (filled in by the driver, see :func:`builtin_config`) carries the model
factory and the evaluation arrays.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from costsched import api
from costsched.compression import distillation_loss
from costsched.training.optim import build_optimizer, build_scheduler, configure_precision
from costsched.training.schedule import BatchPlan
from costsched.training.state import Progress, restore_training_state, training_state


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


def builtin_config(*, model_factory: Any, x_val: np.ndarray, y_val: np.ndarray,
                   x_test: np.ndarray, y_test: np.ndarray, num_train_rows: int,
                   schedule_epochs: int | None = None) -> dict[str, Any]:
    """The built-in entrypoint's config: what the driver measured before launching.
    ``schedule_epochs``: the epochs the learning-rate schedule spans (None: the job's
    ``num_epochs``); a profile runs a few epochs of a longer job at the job's rates."""
    return {"model_factory": model_factory, "x_val": x_val, "y_val": y_val,
            "x_test": x_test, "y_test": y_test, "num_train_rows": num_train_rows,
            "schedule_epochs": schedule_epochs}


def train_loop(config: dict[str, Any]) -> dict[str, Any]:
    """The built-in entrypoint; returns the final metrics (for in-process callers)."""
    return Trainer(config).run()


class Trainer:
    """One attempt of the built-in job on one worker, resuming from the newest checkpoint."""

    def __init__(self, config: dict[str, Any]):
        ctx = api.get_context()
        self.ctx, self.config, self.job = ctx, config, ctx.job
        cfg = self.job.training
        torch.manual_seed(cfg.seed)
        self.autocast_dtype = configure_precision(cfg, ctx.device)
        factory = config["model_factory"]
        self.model = api.prepare_model(factory())
        self.teacher = factory.teacher() if hasattr(factory, "teacher") else None
        if self.teacher is not None:
            self.teacher.to(ctx.device)
        self.raw_model = getattr(self.model, "module", self.model)
        self.optimizer = build_optimizer(self.job.optimizer, self.raw_model.parameters())
        for group in self.optimizer.param_groups:  # an adaptive job's batch, chosen for it
            group["lr"] *= ctx.lr_scale
        self.plan = BatchPlan(global_batch_size=ctx.batch_size,
                              world_size=ctx.world_size, rank=ctx.rank,
                              micro_batch_size=cfg.micro_batch_size)
        self.steps_per_epoch = self.plan.steps_per_epoch(config["num_train_rows"])
        total_steps = (config.get("schedule_epochs") or cfg.num_epochs) * max(
            1, config["num_train_rows"] // ctx.batch_size)
        self.scheduler = build_scheduler(self.job.optimizer, self.optimizer, total_steps)
        local = self.plan.local_batch_size
        api.prepare_optimizer(self.optimizer, local_batch_size=math.ceil(
            local / max(1, len(self.plan.micro_batches(local)))))
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.progress = Progress()
        state = api.load_checkpoint()
        if state is not None:
            self.progress = restore_training_state(
                state, model=self.raw_model, optimizer=self.optimizer,
                scheduler=self.scheduler, scaler=self.scaler, batch_size=ctx.batch_size)
        self.progress.batch_size = ctx.batch_size
        self.data_rng = np.random.default_rng([cfg.seed, ctx.rank, self.progress.global_step])

    # -- one optimiser step -------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One optimiser step over the local batch; returns (loss sum, correct count)."""
        device = self.ctx.device
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
        c = self.job.compression
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        mean = distillation_loss(logits.float(), teacher_logits.float(), y,
                                 temperature=c.distill_temperature, weight=c.distill_weight)
        return mean * len(y)

    def _optimizer_step(self) -> None:
        clip = self.job.optimizer.grad_clip_norm
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

    # -- reports and checkpoints ---------------------------------------------
    def report(self, metrics: dict[str, Any], *, final: bool = False) -> None:
        """Report with a checkpoint of everything needed to resume exactly here."""
        state = training_state(model=self.raw_model, optimizer=self.optimizer,
                               scheduler=self.scheduler, scaler=self.scaler,
                               progress=self.progress)
        metrics = metrics | {
            "global_step": self.progress.global_step, "epoch": self.progress.epoch,
            "total_steps": self.job.training.num_epochs * self.steps_per_epoch}
        api.report(metrics | ({"final": True} if final else {}), checkpoint=state, final=final)

    # -- the loop ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.job.training
        while self.progress.epoch < cfg.num_epochs and not self.run_epoch():
            pass
        last = dict(self.progress.history[-1]) if self.progress.history else {}
        if api.stop_reason() not in (None, "TARGET_REACHED", "BUDGET_EXHAUSTED"):
            return last | {"stop_reason": api.stop_reason()}  # checkpointed; asked to stop
        test_acc = evaluate(self.raw_model, self.config["x_test"], self.config["y_test"],
                            self.ctx.device)
        final = last | {"test_accuracy": test_acc, "history": list(self.progress.history)}
        self.report(final, final=True)
        return final | {"stop_reason": api.stop_reason() or "COMPLETED",
                        "usd_to_target": api.usd_to_target()}

    def run_epoch(self) -> bool:
        """Train one epoch (or what is left of it); True when the run must stop."""
        epoch, interval = self.progress.epoch, self.job.checkpoint.interval_steps
        started, samples, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for b, (x, y) in enumerate(api.train_batches(epoch, self.plan.local_batch_size)):
            if b < self.progress.batch_in_epoch or b >= self.steps_per_epoch:
                continue  # consumed so every shard stays in step; trained on already or spare
            x = self._augment(x)
            step_loss, step_correct = self.train_step(x, y)
            loss_sum, correct = loss_sum + step_loss, correct + step_correct
            samples += len(y)
            self.progress.global_step += 1
            self.progress.batch_in_epoch = b + 1
            if self.progress.global_step % interval == 0 or api.should_stop():
                self.report({"loss": loss_sum / max(1, samples)})
                if api.should_stop():
                    return True
        return self.end_epoch(started, samples, loss_sum, correct)

    def end_epoch(self, started: float, samples: int, loss_sum: float, correct: int) -> bool:
        seconds = max(1e-9, time.perf_counter() - started)
        val_acc = evaluate(self.raw_model, self.config["x_val"], self.config["y_val"],
                           self.ctx.device)
        self.progress.epoch += 1
        self.progress.batch_in_epoch = 0
        metrics: dict[str, Any] = {"val_accuracy": val_acc, "lr": self.scheduler.get_last_lr()[0]}
        if samples:  # none when a resume landed on the epoch's end: nothing to average
            metrics |= {
                "loss": loss_sum / samples, "train_accuracy": correct / samples,
                "samples_per_s": samples * self.ctx.world_size / seconds,
                "epoch_train_s": seconds, "epoch_steps": samples // max(
                    1, self.plan.local_batch_size),
            }
        # When the epoch ended, validation included: forecasts time epochs from it.
        metrics["epoch_ended_at"] = time.time()
        self.progress.history.append(metrics | {"epoch": self.progress.epoch})
        self.report(metrics)
        return api.should_stop()

    def _augment(self, x: Any) -> torch.Tensor:
        aug = self.job.dataset.augment
        if aug.noise_std == 0 and aug.max_shift == 0:
            return torch.as_tensor(x)
        from costsched.training.data import augment

        return torch.as_tensor(augment(np.asarray(x), aug, self.data_rng))
