"""The model a job trains: its architecture, with its compression applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from costsched.compression import (
    apply_compression,
    finalize_compression,
    load_teacher,
    measure_footprint,
)
from costsched.config.job import JobConfig
from costsched.training.models import build_model


@dataclass(frozen=True, kw_only=True)
class JobModelFactory:
    """Builds the same model on every worker (call under the same torch seed).

    Compression is applied to the freshly initialised model: channel pruning and
    low-rank give a smaller network to train, magnitude pruning trains under a
    fixed sparsity mask, QAT trains with fake quantization. With a teacher
    checkpoint, the student also learns from the teacher's logits.
    """

    job: JobConfig
    input_shape: tuple[int, ...]
    num_classes: int

    def architecture(self) -> nn.Module:
        model = self.job.model
        return build_model(model.kind, input_shape=self.input_shape,
                           num_classes=self.num_classes, widths=model.widths,
                           dropout=model.dropout)

    def __call__(self) -> nn.Module:
        return apply_compression(self.architecture(), self.job.compression)

    def teacher(self) -> nn.Module | None:
        """The distillation teacher (same architecture, uncompressed), if configured."""
        path = self.job.compression.distill_teacher_path
        return load_teacher(path, self.architecture) if path else None

    def footprint(self, example: torch.Tensor) -> dict[str, Any]:
        """Size, FLOPs and CPU latency of the inference form of this job's model."""
        model = finalize_compression(self(), self.job.compression)
        return vars(measure_footprint(model, example)).copy()
