"""Structured channel pruning: remove whole output channels so layers really shrink.

Channels are ranked by the L1 norm of their filter (row of a Linear weight, output slice
of a Conv weight); the weakest ``ratio`` fraction are removed from the producing layer,
from the BatchNorm after it and from the inputs of the next Linear/Conv. Which channels
are prunable depends on the architecture (see :func:`prune_channels`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from costsched.training.models import CNN1D, MLP, BasicBlock2D

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)

# A chain slot is (parent container, attribute name) so the layer can be replaced.
Slot = tuple[nn.Module, str]


def prune_channels(model: nn.Module, ratio: float) -> nn.Module:
    """Return a copy of ``model`` with ``ratio`` of its hidden channels removed.

    - MLP: every hidden Linear width (the classifier's outputs stay).
    - CNN1D: every conv's channels, with its BatchNorm and the next conv / the classifier
      (global pooling keeps the channel count, so the classifier inputs map 1:1).
    - ResNet2D: only each block's inner channels (body conv1 out, its BN, conv2 in), so
      the residual sum keeps matching shapes; the stem and block outputs are kept.
    At least one channel per layer is kept. Raises ValueError for other architectures.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"channel pruning ratio must be in [0, 1), got {ratio}")
    pruned = copy.deepcopy(model)
    if ratio == 0.0:
        return pruned
    chains = _chains(pruned)
    for chain in chains:
        _prune_chain(chain, ratio)
    return pruned


def _chains(model: nn.Module) -> list[list[Slot]]:
    if isinstance(model, MLP | CNN1D):
        slots = [(model.features, name) for name, _ in model.features.named_children()]
        return [slots + [(model, "classifier")]]
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock2D)]
    if blocks:
        return [[(b.body, name) for name, _ in b.body.named_children()] for b in blocks]
    raise ValueError(
        "channel pruning supports the MLP, CNN1D and ResNet2D models of "
        "costsched.training.models, "
        f"not {type(model).__name__}; set compression.channel_pruning_ratio to 0"
    )


def _prune_chain(chain: list[Slot], ratio: float) -> None:
    """Prune every weighted layer's outputs except the last one's (the chain's output)."""
    weighted = [i for i, (parent, name) in enumerate(chain)
                if isinstance(getattr(parent, name), _WEIGHTED)]
    for producer, consumer in zip(weighted, weighted[1:], strict=False):
        parent, name = chain[producer]
        layer = getattr(parent, name)
        keep = _strongest_channels(layer.weight, ratio)
        setattr(parent, name, _slice_layer(layer, out_idx=keep))
        for bn_parent, bn_name in chain[producer + 1 : consumer]:
            bn = getattr(bn_parent, bn_name)
            if isinstance(bn, _BATCHNORM):
                setattr(bn_parent, bn_name, _slice_batchnorm(bn, keep))
        c_parent, c_name = chain[consumer]
        setattr(c_parent, c_name, _slice_layer(getattr(c_parent, c_name), in_idx=keep))


def _strongest_channels(weight: torch.Tensor, ratio: float) -> torch.Tensor:
    num_out = weight.shape[0]
    num_keep = max(1, num_out - math.floor(ratio * num_out))
    scores = weight.detach().abs().flatten(1).sum(dim=1)
    # Sorted so surviving channels keep their original order (easier to inspect).
    return torch.topk(scores, num_keep).indices.sort().values


@torch.no_grad()
def _slice_layer(
    layer: nn.Module, out_idx: torch.Tensor | None = None, in_idx: torch.Tensor | None = None
) -> nn.Module:
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    if out_idx is not None:
        weight = weight[out_idx]
        bias = bias[out_idx] if bias is not None else None
    if in_idx is not None:
        weight = weight[:, in_idx]
    if isinstance(layer, nn.Linear):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    else:
        if layer.groups != 1:
            raise ValueError("channel pruning of grouped convolutions is not supported")
        new = type(layer)(
            weight.shape[1], weight.shape[0], layer.kernel_size, stride=layer.stride,
            padding=layer.padding, dilation=layer.dilation, bias=bias is not None,
            padding_mode=layer.padding_mode,
        )
    new.weight.copy_(weight)
    if bias is not None:
        new.bias.copy_(bias)
    return new.train(layer.training)


@torch.no_grad()
def _slice_batchnorm(bn: nn.Module, keep: torch.Tensor) -> nn.Module:
    new = type(bn)(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                   track_running_stats=bn.track_running_stats)
    if bn.affine:
        new.weight.copy_(bn.weight[keep])
        new.bias.copy_(bn.bias[keep])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)
