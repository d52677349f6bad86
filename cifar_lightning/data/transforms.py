"""The fixed ends of every pipeline: uint8 augmentation first, then float + normalization.

Augmentations (``conf/aug/``) work on uint8 images so their fill values and colour ops mean
the same thing in every recipe; normalization comes last, from ``data.mean``/``data.std``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2


def normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def train_transform(
    aug: Callable[[torch.Tensor], torch.Tensor] | None,
    mean: Sequence[float],
    std: Sequence[float],
) -> v2.Transform:
    steps = [aug] if aug is not None else []
    return v2.Compose([*steps, normalize(mean, std)])


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """Validation and test never see augmentation: only the normalization."""
    return normalize(mean, std)
