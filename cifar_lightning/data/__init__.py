"""Data: sources (download, image folder, fake), the DataModule, transforms."""

from cifar_lightning.data.datamodule import CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule
from cifar_lightning.data.sources import CIFAR10_CLASSES

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR10DataModule"]
