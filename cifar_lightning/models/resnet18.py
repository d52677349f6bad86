"""ResNet-18 for 32x32 images: torchvision's net with a CIFAR stem (11,173,962 parameters).

The baseline of Lightning's CIFAR-10 tutorial and of kuangliu/pytorch-cifar (~93-95%).
ImageNet's stem (7x7 stride-2 conv, then a stride-2 max-pool) would shrink a 32x32 image
to 8x8 before the first block; a 3x3 stride-1 conv and no pool keep the four stages at
32, 16, 8 and 4 pixels. Everything else is torchvision's.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet


class ResNet18(ResNet):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
