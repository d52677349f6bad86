"""Seed 003: a depthwise-separable net with 82,474 parameters and a 25-pixel receptive field.

No max-pooling: resolution drops through two stride-2 convs; a dilated conv widens the
receptive field cheaply; global average pooling replaces a big linear head. Every conv (or
depthwise-separable pair) is followed by BatchNorm and ReLU ("BR" in the spec).

    C1  Conv(3→16)            DS(16→32)           32x32
    C2  DS(32→48)             Conv(48→48, s2)     16x16
    C3  DS(48→64)             Conv(64→64, d2)     16x16
    C4  DS(64→96, s2)         Conv(96→96, 1x1)     8x8
    GAP → Dropout(0.05) → Linear(96→10)

Receptive field of a C4 unit: 3, 5 | 7, 9 | 13, 21 | 25, 25 (``python -m cifar_lightning.summary
model=depthwise`` derives it from the layers). The seed README's 47 comes from applying each
stride-2 layer's stride to its own kernel (11 instead of 9, 31 instead of 25) and adding 16 for
the final 1x1 conv, which sees no more pixels than its input.
"""

from __future__ import annotations

from torch import nn


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv then 1x1 pointwise, nothing between them (as in the seed)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin),
            nn.Conv2d(cin, cout, 1),
        )


def br(conv: nn.Module, channels: int) -> list[nn.Module]:
    """The op followed by BatchNorm and ReLU."""
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class DepthwiseNet(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.05) -> None:
        super().__init__()
        self.c1 = nn.Sequential(
            *br(nn.Conv2d(3, 16, 3, padding=1), 16),
            *br(DepthwiseSeparable(16, 32), 32),
        )
        self.c2 = nn.Sequential(
            *br(DepthwiseSeparable(32, 48), 48),
            *br(nn.Conv2d(48, 48, 3, stride=2, padding=1), 48),
        )
        self.c3 = nn.Sequential(
            *br(DepthwiseSeparable(48, 64), 64),
            *br(nn.Conv2d(64, 64, 3, padding=2, dilation=2), 64),
        )
        self.c4 = nn.Sequential(
            *br(DepthwiseSeparable(64, 96, stride=2), 96),
            *br(nn.Conv2d(96, 96, 1), 96),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(96, num_classes)
        )

    def forward(self, x):
        return self.head(self.c4(self.c3(self.c2(self.c1(x)))))
