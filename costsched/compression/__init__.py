"""Compression transforms on a plain ``torch.nn.Module`` (pure: no ``ray``).

Training-loop use::

    model = apply_compression(model, config)        # before building the optimizer
    ...train, with distillation_loss(...) if config.distillation_enabled...
    model = finalize_compression(model, config)     # inference form
    footprint = measure_footprint(model, example_batch)
"""

import importlib
from typing import Any

_HOMES = {
    "prune_channels": "channel_pruning",
    "distillation_loss": "distillation", "load_teacher": "distillation",
    "Footprint": "footprint", "count_flops": "footprint", "measure_footprint": "footprint",
    "factorize_linear": "low_rank",
    "apply_global_magnitude_pruning": "magnitude_pruning", "finalize_pruning": "magnitude_pruning",
    "weight_sparsity": "magnitude_pruning",
    "apply_compression": "pipeline", "finalize_compression": "pipeline",
    "convert_qat": "quantization", "prepare_qat": "quantization",
    "quantize_dynamic_int8": "quantization",
    "CompressionConfig": "spec",
}
"""Each public name -> its module, imported on first use: a job config needs only the
``spec`` (no torch), and the command line must start fast."""


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CompressionConfig",
    "Footprint",
    "apply_compression",
    "apply_global_magnitude_pruning",
    "convert_qat",
    "count_flops",
    "distillation_loss",
    "factorize_linear",
    "finalize_compression",
    "finalize_pruning",
    "load_teacher",
    "measure_footprint",
    "prepare_qat",
    "prune_channels",
    "quantize_dynamic_int8",
    "weight_sparsity",
]
