"""Low-rank factorisation of Linear layers by truncated SVD."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def factorize_linear(model: nn.Module, rank_ratio: float) -> nn.Module:
    """Return a copy where each eligible Linear(in, out) becomes Linear(in, r) -> Linear(r, out).

    ``r = ceil(rank_ratio * min(in, out))``. A layer is eligible only when the two factors
    hold fewer parameters than the original (``r * (in + out) < in * out``); otherwise
    factorising would make it bigger and slower. The factors are ``sqrt(S) Vh`` and
    ``U sqrt(S)`` so both carry similar scale, which trains better than ``S`` on one side.
    """
    if not 0.0 < rank_ratio <= 1.0:
        raise ValueError(f"rank_ratio must be in (0, 1], got {rank_ratio}")
    factored = copy.deepcopy(model)
    if rank_ratio == 1.0:
        return factored
    _replace_linears(factored, rank_ratio)
    return factored


def _replace_linears(module: nn.Module, rank_ratio: float) -> None:
    for name, child in module.named_children():
        if type(child) is nn.Linear:  # exact type: QAT/quantized Linears are left alone
            rank = math.ceil(rank_ratio * min(child.in_features, child.out_features))
            if rank * (child.in_features + child.out_features) < child.weight.numel():
                setattr(module, name, _factorize(child, rank))
        else:
            _replace_linears(child, rank_ratio)


@torch.no_grad()
def _factorize(layer: nn.Linear, rank: int) -> nn.Sequential:
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    root_s = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first.weight.copy_(root_s[:, None] * vh[:rank])
    second.weight.copy_(u[:, :rank] * root_s[None, :])
    if layer.bias is not None:
        second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)
