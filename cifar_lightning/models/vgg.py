"""Seed 002: a VGG-style net, 34,749,002 parameters (README: ~81% validation).

Three VGG stages of two 3x3 convs (bias, ReLU, no BatchNorm) and a 2x2 max-pool take the
image to 4x4x256; two 4096-wide fully connected layers with dropout classify the 4,096
values. The two 4096x4096 layers hold 97% of the parameters.

    Conv(3→64)    Conv(64→64)    pool   32 → 16
    Conv(64→128)  Conv(128→128)  pool   16 → 8
    Conv(128→256) Conv(256→256)  pool    8 → 4
    flatten 4096 → Linear 4096 → ReLU → Dropout(0.5) → Linear 4096 → ReLU → Dropout(0.5)
                 → Linear 10
"""

from __future__ import annotations

from torch import nn


def vgg_stage(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class VGG(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg_stage(3, 64), *vgg_stage(64, 128), *vgg_stage(128, 256))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 4 * 4, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
