"""Model size, compute and latency of a trial's model, from its job config."""

from __future__ import annotations

from typing import Any

from costsched.data import Splits
from costsched.job_config import JobConfig
from costsched.models import build_model


def model_footprint(job: JobConfig, splits: Splits) -> dict[str, Any]:
    model = build_model(job.model.kind, input_shape=splits.input_shape,
                        num_classes=splits.num_classes, widths=job.model.widths)
    return {"num_params": sum(p.numel() for p in model.parameters()), "model_bytes": None,
            "flops_per_sample": None, "cpu_latency_ms": None}
