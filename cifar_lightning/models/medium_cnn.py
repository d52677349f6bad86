"""Seed 001: a medium CNN without BatchNorm, 2,791,434 parameters (README: 82% top-1).

Five convs (each with bias, each followed by ReLU) and two max-pools take the image to a
6x6x256 map — the last conv has no padding, 8x8 → 6x6 — and a four-layer MLP classifies its
9,216 values, which is where 2.4M of the parameters sit. Channel dropout (``Dropout2d``,
whole feature maps) follows the third and the last conv; the seed used one module twice.

    Conv(3→8)  Conv(8→32)   pool           32 → 16
    Conv(32→64) Dropout2d  Conv(64→128)  pool   16 → 8
    Conv(128→256, no padding) Dropout2d         8 → 6
    flatten 9216 → Linear 256 → ReLU → Linear 128 → ReLU → Linear 64 → ReLU → Linear 10
"""

from __future__ import annotations

from torch import nn


def conv_relu(cin: int, cout: int, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=padding), nn.ReLU(inplace=True)]


class MediumCNN(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_relu(3, 8),
            *conv_relu(8, 32),
            nn.MaxPool2d(2),
            *conv_relu(32, 64),
            nn.Dropout2d(dropout),
            *conv_relu(64, 128),
            nn.MaxPool2d(2),
            *conv_relu(128, 256, padding=0),
            nn.Dropout2d(dropout),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
