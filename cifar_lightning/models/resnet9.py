"""Seed 004: a ResNet-9 (the DAWNBench CIFAR-10 net), 6,573,120 parameters (README: 92.72%).

Four conv blocks widen 64 → 512 while three max-pools shrink 32 → 4; two residual pairs add
depth at 16x16 and 4x4 where it is cheap. No conv or the final linear layer has a bias:
BatchNorm follows every conv and makes one redundant.

    prep     B(3→64)                                   32x32
    layer1   B(64→128, pool)   + Residual[B(128), B(128)]   16x16
    layer2   B(128→256, pool)                          8x8
    layer3   B(256→512, pool)  + Residual[B(512), B(512)]    4x4
    head     MaxPool(4) → flatten 512 → Linear 10 (no bias)

B(i→o, pool) = Conv(i→o, 3, padding 1, no bias) → [MaxPool2 if pool] → BatchNorm2d → ReLU:
the pool sits between the conv and the BatchNorm, as in the seed. A residual pair's output is
added to its input with no ReLU after the add. (The seed also had Dropout(p=0) in every
block; a no-op, left out.)
"""

from __future__ import annotations

import torch
from torch import nn


def block(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + B(B(x)): two blocks at constant width, added back to their input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(block(channels, channels), block(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.prep = block(3, 64)
        self.layer1 = nn.Sequential(block(64, 128, pool=True), Residual(128))
        self.layer2 = block(128, 256, pool=True)
        self.layer3 = nn.Sequential(block(256, 512, pool=True), Residual(512))
        self.head = nn.Sequential(
            nn.MaxPool2d(4), nn.Flatten(), nn.Linear(512, num_classes, bias=False)
        )

    def forward(self, x):
        return self.head(self.layer3(self.layer2(self.layer1(self.prep(x)))))
