"""One LightningModule per architecture, each over the shared :class:`ImageClassifier`.

``conf/model/<name>.yaml`` picks ``<name>.py``'s classifier: simple_cnn (seed 000),
medium_cnn (001), vgg (002), depthwise (003), resnet9 (004); airbench_net (the speedrun).
"""

from cifar_lightning.models.airbench_net import AirbenchClassifier
from cifar_lightning.models.base import ImageClassifier
from cifar_lightning.models.depthwise import DepthwiseClassifier
from cifar_lightning.models.medium_cnn import MediumCNNClassifier
from cifar_lightning.models.resnet9 import ResNet9Classifier
from cifar_lightning.models.simple_cnn import SimpleCNNClassifier
from cifar_lightning.models.vgg import VGGClassifier

__all__ = [
    "AirbenchClassifier",
    "DepthwiseClassifier",
    "ImageClassifier",
    "MediumCNNClassifier",
    "ResNet9Classifier",
    "SimpleCNNClassifier",
    "VGGClassifier",
]
