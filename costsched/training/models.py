"""Model zoo: MLP, 1D CNN and a small ResNet-style 2D CNN, widths configurable.

Every model maps a float batch shaped ``(N, *input_shape)`` to logits ``(N, num_classes)``.
Layers are plain ``nn.Sequential`` chains where possible so that compression
transforms (pruning, low-rank, quantization) can walk and rewrite them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, then Linear-ReLU blocks, then a Linear classifier."""

    def __init__(self, input_dim: int, widths: Sequence[int], num_classes: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = input_dim
        for width in widths:
            layers += [nn.Linear(prev, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CNN1D(nn.Module):
    """Conv1d-BN-ReLU blocks (stride 2 after the first), global average pool, Linear."""

    def __init__(self, in_channels: int, widths: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            layers += [
                nn.Conv1d(prev, width, kernel_size=5, stride=1 if i == 0 else 2, padding=2),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, L) sequences: one channel
            x = x.unsqueeze(1)
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock2D(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus a (projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNet2D(nn.Module):
    """A small ResNet: stem conv, one basic block per width (stride 2 after the first)."""

    def __init__(self, in_channels: int, widths: Sequence[int], num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks = []
        prev = widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock2D(prev, width, stride=1 if i == 0 else 2))
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # flattened square images, one channel
            side = math.isqrt(x.shape[1])
            x = x.view(x.shape[0], 1, side, side)
        elif x.dim() == 3:
            x = x.unsqueeze(1)
        return self.classifier(self.pool(self.blocks(self.stem(x))).flatten(1))


def _build_mlp(input_shape: Sequence[int], widths: Sequence[int], num_classes: int,
               dropout: float) -> nn.Module:
    return MLP(math.prod(input_shape), widths, num_classes, dropout)


def _build_cnn1d(input_shape: Sequence[int], widths: Sequence[int], num_classes: int,
                 dropout: float) -> nn.Module:
    return CNN1D(input_shape[0] if len(input_shape) == 2 else 1, widths, num_classes)


def _build_resnet2d(input_shape: Sequence[int], widths: Sequence[int], num_classes: int,
                    dropout: float) -> nn.Module:
    if len(input_shape) == 1 and math.isqrt(input_shape[0]) ** 2 != input_shape[0]:
        raise ValueError(f"resnet2d needs square images; got {input_shape[0]} features")
    return ResNet2D(input_shape[0] if len(input_shape) == 3 else 1, widths, num_classes)


BUILDERS: dict[str, Callable[[Sequence[int], Sequence[int], int, float], nn.Module]] = {
    "mlp": _build_mlp,
    "cnn1d": _build_cnn1d,
    "resnet2d": _build_resnet2d,
}
"""Model kind -> builder ``(input_shape, widths, num_classes, dropout) -> module``. The
config's ``MODEL_KINDS`` lists the same kinds without importing torch."""
MODEL_KINDS = tuple(BUILDERS)


def build_model(
    kind: str,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int],
    dropout: float = 0.0,
) -> nn.Module:
    """Build a model of ``kind`` for inputs of ``input_shape`` (without the batch axis).

    ``input_shape`` is ``(features,)`` for tabular/sequence data or ``(H, W)`` /
    ``(C, H, W)`` for images; ``resnet2d`` also accepts ``(H*W,)`` when H == W.
    """
    try:
        builder = BUILDERS[kind]
    except KeyError:
        raise ValueError(
            f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}") from None
    return builder(input_shape, widths, num_classes, dropout)
