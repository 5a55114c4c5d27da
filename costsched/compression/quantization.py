"""int8 quantization with torchao: dynamic post-training, and quantization-aware training.

What each layer type becomes (torchao 0.18, CPU):

- ``nn.Linear``: int8 weights with one scale per output row; inputs quantized to int8 per
  token at run time. ``dynamic_int8`` uses ``Int8DynamicActivationInt8WeightConfig``
  (symmetric inputs, an int8 matmul). QAT uses ``Int8DynamicActivationIntxWeightConfig`` at
  int8 (asymmetric inputs), the int8 scheme torchao's ``QATConfig`` can fake-quantize: the
  converted layer stores int8 weights but computes in float32 on the rounded values, exactly
  what the fake-quantized layer computed in training.
- ``nn.Conv2d`` with at least :data:`MIN_CONV_IN_CHANNELS` input channels per group: int8
  weights only (``IntxWeightOnlyConfig``, a scale and zero point per output channel and kernel
  position). torchao has no int8 convolution kernel: the weight is dequantized and the
  convolution runs in float32, so storage shrinks and compute does not. torchao's QAT has no
  Conv fake quantizer, so :func:`convert_qat` quantizes these weights post-training, as
  :func:`quantize_dynamic_int8` does.
- ``nn.Conv1d`` and narrower ``nn.Conv2d``: stay float32. torchao quantizes only 2-D (Linear)
  and 4-D (Conv2d) weights, and a Conv2d with one input channel fails in torchao 0.18.

Latency: in eager mode every quantized layer quantizes its input in Python-level torchao
code, which costs more than a small float32 layer (about a millisecond per layer on CPU);
torchao gets its speed from ``torch.compile``. The gain without it is storage.

torchao is imported inside the functions: importing it takes seconds.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

MIN_CONV_IN_CHANNELS = 8
"""Narrower Conv2d layers stay float32: each block of ``in_channels`` int8 weights also
stores a float32 scale and an int8 zero point (5 bytes), which would eat most of the saving."""


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy with int8 Linear layers (dynamic int8 activations) and
    int8-stored Conv2d weights; ``model`` is not modified."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantized = copy.deepcopy(model).eval()
    # set_inductor_config=False: the default would change torch._inductor's global config.
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig(set_inductor_config=False))
    _quantize_conv2d_weights(quantized)
    return quantized


def prepare_qat(model: nn.Module) -> nn.Module:
    """Return a training-mode copy whose Linear layers fake-quantize their weights and
    inputs to int8, ready to fine-tune; ``model`` is not modified."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    prepared = copy.deepcopy(model).train()
    quantize_(prepared, QATConfig(_qat_base_config(), step="prepare"))
    return prepared


def convert_qat(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of a :func:`prepare_qat` model with int8 Linear layers and
    int8-stored Conv2d weights; ``model`` is not modified."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    converted = copy.deepcopy(model).eval()
    quantize_(converted, QATConfig(_qat_base_config(), step="convert"))
    _quantize_conv2d_weights(converted)
    return converted


def _qat_base_config():
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis

    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int8, weight_granularity=PerAxis(0)
    )


def _quantize_conv2d_weights(model: nn.Module) -> None:
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis, quantize_

    def wide_conv2d(module: nn.Module, _fqn: str) -> bool:
        # weight.shape[1] is in_channels per group: the length of one quantization block.
        return isinstance(module, nn.Conv2d) and module.weight.shape[1] >= MIN_CONV_IN_CHANNELS

    config = IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))
    quantize_(model, config, filter_fn=wide_conv2d)
