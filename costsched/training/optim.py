"""Optimiser, learning-rate schedule and precision settings from a job config."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

import torch

from costsched.config.job import OptimizerConfig, TrainingConfig
from costsched.errors import ConfigError
from costsched.training.schedule import lr_multiplier

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_optimizer(
    config: OptimizerConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    if config.name == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    optimizer_cls = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return optimizer_cls(params, lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(
    config: OptimizerConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay over ``total_steps`` (see ``lr_multiplier``)."""
    schedule = partial(lr_multiplier, warmup_steps=config.warmup_steps,
                       total_steps=total_steps, min_lr_ratio=config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def configure_precision(config: TrainingConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``config.precision`` on ``device`` (None for fp32).

    fp16 needs CUDA (its loss scaling exists for GPU kernels); bf16 runs on CPU too.
    On CUDA, ``allow_tf32`` switches TF32 matmuls and convolutions.
    """
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = config.allow_tf32
        torch.backends.cudnn.allow_tf32 = config.allow_tf32
    return AUTOCAST_DTYPES[config.precision]
