"""One LightningModule per architecture, each over the shared :class:`ImageClassifier`."""

from cifar_lightning.models.base import ImageClassifier
from cifar_lightning.models.depthwise import DepthwiseClassifier

__all__ = ["DepthwiseClassifier", "ImageClassifier"]
