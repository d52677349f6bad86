"""Seed 000: a small plain CNN, 399,274 parameters (README: 89.16% test after 100 epochs).

Four stages of 3x3 conv + BatchNorm + ReLU, each ending in a 2x2 max-pool, shrink the image
32 → 2; a three-layer MLP with one dropout classifies the flattened 2x2x128 map.

    L(3→32) L(32→32) pool    32 → 16
    L(32→64)         pool    16 → 8
    L(64→128)        pool     8 → 4
    L(128→128)       pool     4 → 2
    flatten 512 → Linear 256 → ReLU → Dropout(0.5) → Linear 64 → ReLU → Linear 10

L(i→o) = Conv(i→o, 3, stride 1, padding 1, bias) → BatchNorm2d → ReLU.
"""

from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """The seed's ``Layer``: the conv keeps its bias even though BatchNorm follows."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SimpleCNN(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(3, 32),
            conv_bn_relu(32, 32),
            nn.MaxPool2d(2),
            conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            conv_bn_relu(64, 128),
            nn.MaxPool2d(2),
            conv_bn_relu(128, 128),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 2 * 2, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(256, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
