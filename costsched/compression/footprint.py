"""Size, compute and latency of a (possibly compressed) model, measured on CPU."""

from __future__ import annotations

import io
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

_INDEX_BYTES = 4  # one int32 index per stored nonzero (COO-style estimate)
_COUNTED = (nn.Linear, nn.Conv1d, nn.Conv2d)  # torchao quantizes these in place


@dataclass(frozen=True, kw_only=True)
class Footprint:
    """What a compressed model costs to store and to run, per sample."""

    num_params: int
    """Weights and biases, counting masked-out (pruned) entries."""

    num_nonzero_params: int
    """Weights and biases that are not exactly zero (after any pruning mask)."""

    model_bytes: int
    """Size of the serialized ``state_dict`` (``torch.save``); dense, so pruning masks count."""

    sparse_bytes: int
    """Estimated storage if each weight tensor kept only its nonzeros as (value, int32 index)
    pairs, chosen per tensor only where that beats dense; equals the dense parameter bytes
    for an unpruned model. A quantized weight counts 1 byte per int8 value plus its scales
    and zero points. An estimate of a sparse format, not a file we write."""

    flops_per_sample: float
    """2 x multiply-adds of Linear/Conv layers per input sample, counting only nonzero
    weights (so unstructured pruning lowers it even though dense kernels do not get faster);
    bias, normalisation, activation and pooling are not counted."""

    cpu_latency_ms: float
    """Median wall time of one batch-1 forward pass, one CPU thread, ``inference_mode``."""


def _is_quantized(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a torchao quantized tensor (its values stored in ``qdata``)."""
    return is_traceable_wrapper_subclass(tensor) and hasattr(tensor, "qdata")


def _stored_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The module's own weight/bias tensors as stored: pruning masks applied, torchao
    quantized weights left quantized."""
    tensors = []
    for name, param in module.named_parameters(recurse=False):
        if name.endswith("_orig"):  # torch.nn.utils.prune reparametrisation
            tensors.append(getattr(module, name.removesuffix("_orig")))
        else:
            tensors.append(param)
    return [t if _is_quantized(t) else t.detach() for t in tensors]


def _dequantized(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.dequantize() if _is_quantized(tensor) else tensor


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a Linear/Conv forward pass uses (pruning mask applied, int8 dequantized)."""
    weight = module.weight  # with prune's reparametrisation this is the masked one
    # No detach() for torchao tensors: it fails on them under inference_mode.
    return weight.dequantize() if _is_quantized(weight) else weight.detach()


def _sparse_bytes(tensor: torch.Tensor, num_nonzero: int) -> int:
    """Bytes of ``tensor`` stored dense or as (value, int32 index) pairs, whichever is less;
    a quantized tensor adds its scales and zero points."""
    if _is_quantized(tensor):
        names, _ = tensor.__tensor_flatten__()
        total = sum(_nbytes(getattr(tensor, name)) for name in names)
        metadata = total - _nbytes(tensor.qdata)
        value_bytes = _nbytes(tensor.qdata) / tensor.numel()  # below 1 if packed (int4)
    else:
        metadata, value_bytes = 0, tensor.element_size()
    values = min(tensor.numel() * value_bytes, num_nonzero * (value_bytes + _INDEX_BYTES))
    return metadata + math.ceil(values)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _counts(model: nn.Module) -> tuple[int, int, int]:
    num = nonzero = sparse = 0
    for module in model.modules():
        for tensor in _stored_tensors(module):
            nnz = int(torch.count_nonzero(_dequantized(tensor)))
            num += tensor.numel()
            nonzero += nnz
            sparse += _sparse_bytes(tensor, nnz)
    return num, nonzero, sparse


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def count_flops(model: nn.Module, example_input: torch.Tensor) -> float:
    """FLOPs per sample (see :attr:`Footprint.flops_per_sample`) for ``example_input``."""
    total = 0.0
    batch = example_input.shape[0]

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        weight = effective_weight(module)
        out_channels = weight.shape[0]
        positions = output.numel() / (batch * out_channels)  # 1 for a Linear on a 2D batch
        total += 2.0 * int(torch.count_nonzero(weight)) * positions

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.inference_mode():
            model(example_input)
    finally:
        for handle in handles:
            handle.remove()
    return total


def cpu_latency_ms(model: nn.Module, example_input: torch.Tensor, num_runs: int = 50,
                   batch_size: int = 1,
                   reduce: Callable[[list[float]], float] = statistics.median) -> float:
    """Latency of one batch of ``batch_size`` (the first rows of ``example_input``) on
    one thread, ``reduce`` (median by default) over ``num_runs`` timed batches; the
    caller's thread count is restored."""
    if example_input.shape[0] < batch_size:
        raise ValueError(f"example_input has {example_input.shape[0]} rows; "
                         f"batch_size {batch_size} needs as many")
    sample = example_input[:batch_size]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: comparable numbers on a shared machine
    try:
        times = []
        with torch.inference_mode():
            for _ in range(3):  # warm-up: first calls pay allocation and packing
                model(sample)
            for _ in range(num_runs):
                start = time.perf_counter()
                model(sample)
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000.0 * reduce(times)


def measure_footprint(
    model: nn.Module, example_input: torch.Tensor, *, num_latency_runs: int = 50
) -> Footprint:
    """Measure ``model`` in eval mode (restoring its mode after) on ``example_input``."""
    was_training = model.training
    model.eval()
    try:
        num, nonzero, sparse = _counts(model)
        return Footprint(
            num_params=num,
            num_nonzero_params=nonzero,
            model_bytes=serialized_bytes(model),
            sparse_bytes=sparse,
            flops_per_sample=count_flops(model, example_input),
            cpu_latency_ms=cpu_latency_ms(model, example_input, num_latency_runs),
        )
    finally:
        model.train(was_training)
