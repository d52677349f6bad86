"""One LightningModule per architecture: the shared classifier plus what its net needs.

Most nets need nothing beyond :class:`ImageClassifier` but their own ``NET`` (so that, say,
``DepthwiseClassifier()`` builds seed 003's net); the speedrun net needs its whitening init,
a trained-then-frozen bias and BatchNorm biases with their own learning rate.
"""

from __future__ import annotations

from typing import Any

import torch

from cifar_lightning.training.classifier import ImageClassifier

WHITEN_BIAS = "whiten.bias"


def _net(name: str) -> dict[str, str]:
    return {"_target_": f"cifar_lightning.models.{name}"}


class SimpleCNNClassifier(ImageClassifier):
    """``model=simple_cnn``: seed 000's net."""

    NET = _net("simple_cnn.SimpleCNN")


class MediumCNNClassifier(ImageClassifier):
    """``model=medium_cnn``: seed 001's net."""

    NET = _net("medium_cnn.MediumCNN")


class VGGClassifier(ImageClassifier):
    """``model=vgg``: seed 002's net."""

    NET = _net("vgg.VGG")


class DepthwiseClassifier(ImageClassifier):
    """``model=depthwise``: seed 003's net."""

    NET = _net("depthwise.DepthwiseNet")


class ResNet9Classifier(ImageClassifier):
    """``model=resnet9``: seed 004's net."""

    NET = _net("resnet9.ResNet9")


class ResNet18Classifier(ImageClassifier):
    """``model=resnet18``: torchvision's ResNet-18 with a 32x32 stem."""

    NET = _net("resnet18.ResNet18")


class AirbenchClassifier(ImageClassifier):
    """``model=airbench_net``: the speedrun net and its training rules.

    ``bias_lr_scale``: BatchNorm biases learn this many times faster than the rest, with
    weight decay scaled down by the same factor so that their per-step decay is unchanged.
    ``whiten_bias_epochs``: the whitening bias trains for this many epochs, then freezes.
    ``whiten_images``/``whiten_eps``: how many training images set the whitening filters.
    """

    NET = _net("airbench_net.AirbenchNet")

    def __init__(
        self,
        bias_lr_scale: float = 64.0,
        whiten_bias_epochs: int = 3,
        whiten_images: int = 5000,
        whiten_eps: float = 5e-4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Saved with the weights: a resumed or fine-tuned run must not re-whiten.
        self.register_buffer("whitened", torch.tensor(False))

    def param_groups(self) -> list[dict[str, Any]]:
        # By name, not module type: Lightning swaps BatchNorm for SyncBatchNorm
        # (trainer.sync_batchnorm) before this runs, keeping names and tensors.
        optimizer = self.hparams.optimizer or {}
        lr, wd = float(optimizer.get("lr", 0.0)), float(optimizer.get("weight_decay", 0.0))
        scale = self.hparams.bias_lr_scale
        named = [(n, p) for n, p in self.net.named_parameters() if p.requires_grad]
        norm_biases = [p for n, p in named if ".norm" in n and n.endswith(".bias")]
        whiten_bias = [p for n, p in named if n == WHITEN_BIAS]
        taken = {id(p) for p in norm_biases + whiten_bias}
        return [
            {"params": [p for _, p in named if id(p) not in taken]},
            {"params": norm_biases, "lr": lr * scale, "weight_decay": wd / scale},
            {"params": whiten_bias, "name": WHITEN_BIAS},
        ]

    def on_fit_start(self) -> None:
        if bool(self.whitened):
            return
        images = self.trainer.datamodule.sample_train_images(self.hparams.whiten_images)
        self.net.init_whitening(images.to(self.device), self.hparams.whiten_eps)
        self.whitened.fill_(True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Past ``whiten_bias_epochs`` the whitening bias steps with learning rate 0, set here
        after the scheduler's step. ``requires_grad`` stays: flipping it mid-run breaks DDP's
        reducer and recompiles a compiled net."""
        if self.current_epoch >= self.hparams.whiten_bias_epochs:
            for group in optimizer.param_groups:
                if group.get("name") == WHITEN_BIAS:
                    group["lr"] = 0.0
