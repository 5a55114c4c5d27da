"""Apply a :class:`CompressionConfig` around training: structure before, inference form after.

Order before training (:func:`apply_compression`), each step on the previous one's output:

1. channel pruning: removes whole channels, so later steps work on the smaller layers;
2. low-rank factorisation: SVD of the (already narrower) Linear layers;
3. QAT prepare: swaps Linear layers for fake-quantized ones;
4. magnitude pruning, last so its mask is attached to the layers that will be trained
   (QAT's layer swap would drop a mask attached earlier and let pruned weights regrow).

After training (:func:`finalize_compression`): masks made permanent, then QAT converted
to int8 or, for ``dynamic_int8``, the float model quantized.
"""

from __future__ import annotations

from torch import nn

from costsched.compression.channel_pruning import prune_channels
from costsched.compression.low_rank import factorize_linear
from costsched.compression.magnitude_pruning import (
    apply_global_magnitude_pruning,
    finalize_pruning,
)
from costsched.compression.quantization import convert_qat, prepare_qat, quantize_dynamic_int8
from costsched.compression.spec import CompressionConfig


def apply_compression(model: nn.Module, config: CompressionConfig) -> nn.Module:
    """Return the model to train (or fine-tune) under ``config``; ``model`` is not modified.

    Build the optimizer from the returned model's parameters, after this call.
    """
    compressed = prune_channels(model, config.channel_pruning_ratio)  # always a copy
    compressed = factorize_linear(compressed, config.low_rank_ratio)
    if config.quantization == "qat_int8":
        compressed = prepare_qat(compressed)
    return apply_global_magnitude_pruning(compressed, config.pruning_sparsity)


def finalize_compression(model: nn.Module, config: CompressionConfig) -> nn.Module:
    """Return the inference form of a model trained after :func:`apply_compression`.

    Makes pruning permanent in place on ``model``; the quantized result is a new module in
    eval mode.
    """
    model = finalize_pruning(model)
    if config.quantization == "qat_int8":
        return convert_qat(model)
    if config.quantization == "dynamic_int8":
        return quantize_dynamic_int8(model)
    return model.eval()
