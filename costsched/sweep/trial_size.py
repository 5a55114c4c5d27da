"""Model size, compute and latency of a trial's model, from its job config."""

from __future__ import annotations

from typing import Any

import torch

from costsched.config.job import JobConfig
from costsched.training.data import Splits
from costsched.training.model_factory import JobModelFactory


def model_footprint(job: JobConfig, splits: Splits) -> dict[str, Any]:
    """Footprint of the inference form of the job's (compressed) architecture.

    Measured on a freshly built model: parameter count, bytes, FLOPs and
    latency depend on the architecture and the compression settings, not on
    the trained values (nonzero counts reflect the configured sparsity).
    """
    torch.manual_seed(job.training.seed)
    factory = JobModelFactory(job=job, input_shape=splits.input_shape,
                              num_classes=splits.num_classes)
    footprint = factory.footprint(torch.as_tensor(splits.x_test[:1]))
    return {key: footprint[key] for key in
            ("num_params", "model_bytes", "flops_per_sample", "cpu_latency_ms")}
