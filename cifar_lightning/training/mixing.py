"""MixUp and CutMix (``mix.*``): blend pairs of training images and their labels, per batch.

Both regularise by training on images between classes: MixUp blends two whole images, CutMix
pastes a box of one into the other; the label is the two labels weighted by their share of the
pixels. They run in the LightningModule's training step, on the batch the loader delivers
(already augmented and normalized), so they work alike on the classic loader and, on the
device, on the device loader. The ops are torchvision's ``v2.MixUp`` / ``v2.CutMix``: one
mixing weight per batch, drawn from Beta(alpha, alpha), each image paired with its neighbour
in the (shuffled) batch. Every draw comes from torch's CPU generator (no host-device sync),
which the run seeds per step: a resumed run mixes exactly as an uninterrupted one.

The soft labels go to the loss as class probabilities; ``CrossEntropyLoss(label_smoothing=ε)``
smooths them as it smooths hard labels (``(1-ε)·target + ε/K``), which is the same as mixing
two smoothed one-hot labels, as timm does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from torchvision.transforms import v2

MODES = ("none", "mixup", "cutmix", "both")


class BatchMix:
    """``mode``: mixup, cutmix, or both (CutMix with probability ``switch_prob``, else MixUp);
    ``prob``: the chance that a batch is mixed at all. Returns the images and their targets:
    class probabilities (N, K) for a mixed batch, the labels unchanged for one left alone."""

    def __init__(
        self,
        num_classes: int,
        mode: str = "mixup",
        alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        if mode not in MODES[1:]:
            raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES[1:])}")
        self.mode, self.prob, self.switch_prob = mode, prob, switch_prob
        self.mixup = v2.MixUp(alpha=alpha, num_classes=num_classes)
        self.cutmix = v2.CutMix(alpha=alpha, num_classes=num_classes)

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return images, labels
        use_cutmix = self.mode == "cutmix" or (
            self.mode == "both" and float(torch.rand(())) < self.switch_prob
        )
        return (self.cutmix if use_cutmix else self.mixup)(images, labels)

    def settings(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "alpha": self.mixup.alpha,
            "prob": self.prob,
            "switch_prob": self.switch_prob,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


def build_mix(spec: Mapping[str, Any] | None, num_classes: int) -> BatchMix | None:
    """``mix``'s BatchMix, or None for ``mode: none`` (the training step stays as it was).
    The target must be a BatchMix, checked before it is called: the spec is saved in
    checkpoints, and a crafted one must not call anything else."""
    if not spec or spec.get("mode", "none") == "none":
        return None
    target = spec.get("_target_")
    cls = get_object(str(target)) if target else None
    if not (isinstance(cls, type) and issubclass(cls, BatchMix)):
        raise TypeError(f"mix._target_={target!r} is not a BatchMix")
    return instantiate({**spec, "num_classes": num_classes})


def dominant_label(targets: torch.Tensor) -> torch.Tensor:
    """The class with the larger share of each (mixed) image: what train/acc is measured
    against when mixing is on. Hard labels pass through."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets
