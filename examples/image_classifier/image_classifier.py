"""A small CNN classifying scikit-learn's bundled 8x8 digit images, trained with costsched.

The job's entrypoint (``image_classifier:train_loop``), written only against
``costsched.api``. The 1,797 images of ``sklearn.datasets.load_digits`` ship with
scikit-learn, so nothing is downloaded; a seeded ``val_fraction`` of them is held
out. Every ``checkpoint.interval_steps`` steps and at each epoch's end the loop
reports ``val_loss`` and ``val_accuracy`` with a checkpoint; a
``training.target_metric: val_accuracy`` stops it there once reached.

From the job: ``training.global_batch_size``, ``training.num_epochs``,
``training.precision``, ``training.seed`` and ``checkpoint.interval_steps``; the
rest from ``entrypoint_config`` (:data:`DEFAULTS`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import costsched.api as cs

DEFAULTS: dict[str, Any] = {
    "val_fraction": 0.2,
    "channels": [16, 32],  # two 3x3 conv layers, then a 2x2 max-pool (8x8 -> 4x4)
    "hidden": 64,
    "dropout": 0.1,
    "lr": 3e-3,
    "weight_decay": 1e-4,
}


def digit_splits(val_fraction: float, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, val): images (N, 1, 8, 8) scaled to [0, 1], labels 0-9; split by ``seed``."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    num_val = int(len(y) * val_fraction)
    val, train = order[:num_val], order[num_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def build_cnn(channels: list[int], hidden: int, dropout: float) -> nn.Sequential:
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * 4 * 4, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 10),
    )


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    if global_batch_size % world_size:
        raise ValueError(f"training.global_batch_size {global_batch_size} must be a multiple "
                         f"of the {world_size} workers")
    return global_batch_size // world_size


def train_loop(config: dict[str, Any]) -> None:
    """Train until ``num_epochs`` are done, the target is reached or costsched says stop."""
    Trainer(DEFAULTS | config).run()


class Trainer:
    """One attempt of the run on one worker, resumed from the newest checkpoint if any."""

    def __init__(self, config: dict[str, Any]):
        ctx = cs.get_context()
        self.ctx, self.training = ctx, ctx.job.training
        self.interval = ctx.job.checkpoint.interval_steps
        torch.manual_seed(self.training.seed)
        train, self.val = digit_splits(config["val_fraction"], self.training.seed)
        model = build_cnn(config["channels"], config["hidden"], config["dropout"])
        state = cs.load_checkpoint()
        if state:
            model.load_state_dict(state["model"])  # before wrapping: the same on every rank
        self.model = cs.prepare_model(model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config["lr"],
                                           weight_decay=config["weight_decay"])
        self.dtype = {"fp32": None, "bf16": torch.bfloat16,
                      "fp16": torch.float16}[self.training.precision]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.training.precision == "fp16")
        # One worker shuffles with this generator, reseeded each epoch; several use the
        # distributed sampler prepare_data_loader adds, reseeded by set_epoch.
        self.shuffle = torch.Generator()
        batch = local_batch_size(self.training.global_batch_size, ctx.world_size)
        self.loader = cs.prepare_data_loader(DataLoader(
            train, batch_size=batch, shuffle=True, drop_last=True, generator=self.shuffle))
        self.steps_per_epoch = len(self.loader)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        if state:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.epoch = state["step"], state["epoch"]
            self.batch_in_epoch = state["batch_in_epoch"]
        self._loss_sum, self._loss_count, self._since = 0.0, 0, time.perf_counter()

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.ctx.device.type, dtype=self.dtype,
                              enabled=self.dtype is not None)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        with self.autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._loss_sum, self._loss_count = self._loss_sum + loss.item(), self._loss_count + 1

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and accuracy on the whole validation split (the same on every rank)."""
        self.model.eval()
        x, y = (t.to(self.ctx.device) for t in self.val.tensors)
        with self.autocast():
            logits = self.model(x).float()
        self.model.train()
        return {"val_loss": F.cross_entropy(logits, y).item(),
                "val_accuracy": (logits.argmax(1) == y).float().mean().item()}

    def report(self) -> None:
        """Validation metrics and a checkpoint of everything needed to resume here."""
        seconds = max(time.perf_counter() - self._since, 1e-9)
        epochs = self.epoch + self.batch_in_epoch / self.steps_per_epoch
        metrics = {"global_step": self.step, "epoch": round(epochs, 2),
                   "loss": self._loss_sum / max(1, self._loss_count),
                   "samples_per_s": self._loss_count * self.training.global_batch_size / seconds,
                   **self.evaluate()}
        cs.report(metrics, checkpoint={
            "model": getattr(self.model, "module", self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch})
        self._loss_sum, self._loss_count, self._since = 0.0, 0, time.perf_counter()

    def run(self) -> None:
        while self.epoch < self.training.num_epochs:
            self.shuffle.manual_seed(self.training.seed * 1_000_003 + self.epoch)
            if hasattr(self.loader.sampler, "set_epoch"):
                self.loader.sampler.set_epoch(self.epoch)
            for b, (x, y) in enumerate(self.loader):
                if b < self.batch_in_epoch:
                    continue  # trained on before the checkpoint this attempt resumed from
                self.train_step(x, y)
                self.batch_in_epoch = b + 1
                if self.batch_in_epoch == self.steps_per_epoch:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                stop = cs.should_stop()  # every step, on every rank
                if stop or self.step % self.interval == 0 or self.batch_in_epoch == 0:
                    self.report()
                    if cs.should_stop():  # asked to stop, or the report reached the target
                        return
                if self.batch_in_epoch == 0:
                    break
