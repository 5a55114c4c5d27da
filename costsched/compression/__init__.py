"""Compression transforms on a plain ``torch.nn.Module`` (pure: no ``ray``).

Training-loop use::

    model = apply_compression(model, config)        # before building the optimizer
    ...train, with distillation_loss(...) if config.distillation_enabled...
    model = finalize_compression(model, config)     # inference form
    footprint = measure_footprint(model, example_batch)
"""

from costsched.compression.channel_pruning import prune_channels
from costsched.compression.distillation import distillation_loss, load_teacher
from costsched.compression.footprint import Footprint, count_flops, measure_footprint
from costsched.compression.low_rank import factorize_linear
from costsched.compression.magnitude_pruning import (
    apply_global_magnitude_pruning,
    finalize_pruning,
    weight_sparsity,
)
from costsched.compression.pipeline import apply_compression, finalize_compression
from costsched.compression.quantization import convert_qat, prepare_qat, quantize_dynamic_int8
from costsched.compression.spec import CompressionConfig

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
