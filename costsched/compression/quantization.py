"""int8 quantization with torch.ao: dynamic post-training, and quantization-aware training.

Both cover ``nn.Linear`` only. Dynamic quantization has no Conv kernels in torch.ao
(activations of a conv would need static calibration), so convolutions stay float32.
QAT uses eager mode with a quant/dequant "island" around each Linear: FX mode cannot
trace the models here (their ``forward`` branches on ``x.dim()``), and eager whole-model
QAT would need the residual ``+`` rewritten as ``FloatFunctional`` and has no quantized
BatchNorm1d. The islands make QAT work on every model, Linear layers only.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.ao import quantization as tq

_BACKEND = "x86" if "x86" in torch.backends.quantized.supported_engines else "qnnpack"


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy with int8 weights (dynamic int8 activations) in every Linear."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        float_model = copy.deepcopy(model).eval()
        torch.backends.quantized.engine = _BACKEND  # kernels must match the qconfig (global)
        return tq.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)


class QuantizedLinearIsland(nn.Module):
    """Quantize -> Linear -> dequantize, so one Linear runs in int8 amid float layers."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.quant = tq.QuantStub()
        self.linear = linear
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.linear(self.quant(x)))


def prepare_qat(model: nn.Module) -> nn.Module:
    """Return a training-mode copy with fake-quantized Linear layers, ready to fine-tune."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        prepared = copy.deepcopy(model)
        _wrap_linears(prepared)
        qconfig = tq.get_default_qat_qconfig(_BACKEND)
        for island in prepared.modules():
            if isinstance(island, QuantizedLinearIsland):
                island.qconfig = qconfig
        prepared.train()
        return tq.prepare_qat(prepared, inplace=False)


def convert_qat(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of a :func:`prepare_qat` model with real int8 Linear layers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.backends.quantized.engine = _BACKEND  # kernels must match the qconfig (global)
        return tq.convert(copy.deepcopy(model).eval(), inplace=False)


def _wrap_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, QuantizedLinearIsland(child))
        elif not isinstance(child, QuantizedLinearIsland):
            _wrap_linears(child)
