"""Batch plan and learning-rate schedule: pure arithmetic, tested without torch.distributed."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class BatchPlan:
    """How one worker splits the fixed global batch.

    The global batch ``G`` is split over ``W`` workers as evenly as possible:
    ranks below ``G % W`` take one extra sample. Each rank's loss is
    ``sum(per-sample loss) * W / G`` so that DDP's gradient average over ranks
    equals the mean over the whole global batch, whatever ``W`` is: a resize
    does not change what is learned.
    """

    global_batch_size: int
    world_size: int
    rank: int
    micro_batch_size: int
    """Largest forward batch; 0 means the whole local batch in one pass."""

    @property
    def local_batch_size(self) -> int:
        base, extra = divmod(self.global_batch_size, self.world_size)
        return base + (1 if self.rank < extra else 0)

    @property
    def max_local_batch_size(self) -> int:
        return math.ceil(self.global_batch_size / self.world_size)

    @property
    def loss_scale(self) -> float:
        """Multiplier on a sum of per-sample losses (see the class docstring)."""
        return self.world_size / self.global_batch_size

    def micro_batches(self, size: int) -> list[slice]:
        """Slices of a local batch of ``size`` rows, each at most the micro batch."""
        step = self.micro_batch_size or size
        return [slice(i, min(i + step, size)) for i in range(0, size, step)]

    def steps_per_epoch(self, num_train_rows: int) -> int:
        """Optimiser steps per epoch, the same on every rank and for every world size
        that can serve it from equal shards of ``num_train_rows // world_size`` rows."""
        shard_rows = num_train_rows // self.world_size
        nominal = num_train_rows // self.global_batch_size
        return max(1, min(nominal, shard_rows // self.max_local_batch_size))


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up then cosine decay, as a factor on the peak learning rate.

        step < warmup:  (step + 1) / warmup
        after:          min + (1 - min) * 0.5 * (1 + cos(pi * progress)),
                        progress = (step - warmup) / max(1, total - warmup), capped at 1
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_scale(batch_size: int, base_batch_size: int, rule: str) -> float:
    """Learning-rate multiplier when an adaptive job trains at ``batch_size`` instead of
    the ``base_batch_size`` its learning rate was tuned for:

        sqrt:    sqrt(B / B0)   (square-root rule; keeps the update's noise level)
        linear:  B / B0         (linear rule, Goyal et al.; wants warm-up)
    """
    if batch_size < 1 or base_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {base_batch_size}")
    ratio = batch_size / base_batch_size
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise ValueError(f"unknown lr_scaling rule {rule!r}; use sqrt or linear")
