"""Compression settings of a training job (the ``compression:`` section of its YAML)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from costsched.errors import ConfigError

QuantizationMode = Literal["none", "dynamic_int8", "qat_int8"]


@dataclass(frozen=True, kw_only=True)
class CompressionConfig:
    """Which compression transforms to apply; the defaults apply none."""

    pruning_sparsity: float = 0.0
    """Fraction of Linear/Conv weights zeroed by global unstructured magnitude pruning; [0, 1)."""

    channel_pruning_ratio: float = 0.0
    """Fraction of hidden output channels removed by structured L1 pruning, in [0, 1)."""

    low_rank_ratio: float = 1.0
    """Rank of factorised Linear layers as a fraction of min(in, out), in (0, 1]; 1.0 is off."""

    quantization: QuantizationMode = "none"
    """int8 quantization with torchao: post-training dynamic, or quantization-aware training.
    Linear layers get int8 weights and inputs, Conv2d layers int8 weights, Conv1d layers stay
    float32 (see :mod:`costsched.compression.quantization`)."""

    distill_teacher_path: str | None = None
    """Checkpoint (``state.pt`` with key ``model``) of a teacher to distil from; None is off."""

    distill_temperature: float = 4.0
    """Softmax temperature of the distillation KL term, > 0."""

    distill_weight: float = 0.5
    """Weight of the KL term; 1 - weight goes to cross-entropy on labels, in [0, 1]."""

    def __post_init__(self) -> None:
        _check_range("pruning_sparsity", self.pruning_sparsity, 0.0, 1.0, hi_open=True)
        _check_range("channel_pruning_ratio", self.channel_pruning_ratio, 0.0, 1.0, hi_open=True)
        _check_range("distill_weight", self.distill_weight, 0.0, 1.0, hi_open=False)
        if not (_finite(self.low_rank_ratio) and 0.0 < self.low_rank_ratio <= 1.0):
            raise ConfigError(
                f"compression.low_rank_ratio is {self.low_rank_ratio!r}; use a number in (0, 1], "
                "e.g. 0.25, or 1.0 to turn low-rank factorisation off"
            )
        if not (_finite(self.distill_temperature) and self.distill_temperature > 0):
            raise ConfigError(
                f"compression.distill_temperature is {self.distill_temperature!r}; "
                "use a positive number such as 4.0"
            )
        if self.quantization not in ("none", "dynamic_int8", "qat_int8"):
            raise ConfigError(
                f"compression.quantization is {self.quantization!r}; "
                "choose one of none, dynamic_int8, qat_int8"
            )
        if self.distill_teacher_path is not None and not self.distill_teacher_path.strip():
            raise ConfigError(
                "compression.distill_teacher_path is empty; give a checkpoint path or leave it out"
            )

    @property
    def distillation_enabled(self) -> bool:
        """Whether the training loop should add the distillation term."""
        return self.distill_teacher_path is not None


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: float, lo: float, hi: float, *, hi_open: bool) -> None:
    upper_ok = value < hi if hi_open else value <= hi
    if not (_finite(value) and value >= lo and upper_ok):
        bracket = ")" if hi_open else "]"
        raise ConfigError(
            f"compression.{name} is {value!r}; use a number in [{lo:g}, {hi:g}{bracket} "
            f"(0 turns it off)"
        )
