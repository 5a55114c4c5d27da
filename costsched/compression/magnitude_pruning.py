"""Global unstructured magnitude pruning of Linear/Conv weights.

The mask is kept as ``torch.nn.utils.prune``'s reparametrisation (``weight_orig`` *
``weight_mask``) while the model is fine-tuned: the forward pass always sees the masked
weight, so pruned weights stay zero however the optimizer moves ``weight_orig``.
:func:`finalize_pruning` folds the mask into a plain ``weight`` for inference and export.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """Linear/Conv layers (QAT variants included: they subclass these) in module order."""
    return [m for m in model.modules() if isinstance(m, PRUNABLE)]


def apply_global_magnitude_pruning(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-|w| weights across all Linear/Conv layers.

    Global rather than per-layer: small layers (the classifier) keep more weights, which
    costs less accuracy at the same overall sparsity. Biases are not pruned. Modifies
    ``model`` in place (and returns it); the mask stays active until
    :func:`finalize_pruning`.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if sparsity == 0.0:
        return model
    params = [(m, "weight") for m in prunable_layers(model)]
    if not params:
        raise ValueError("model has no Linear/Conv layers to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


def finalize_pruning(model: nn.Module) -> nn.Module:
    """Make every pruning mask permanent (plain ``weight`` with zeros); in place."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero entries over all Linear/Conv weights (masked weights if pruning)."""
    total = zeros = 0
    for module in prunable_layers(model):
        weight = module.weight.detach()
        total += weight.numel()
        zeros += int((weight == 0).sum())
    return zeros / total if total else 0.0


