"""A map-style Dataset over the in-memory uint8 arrays every source produces."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


class ArrayDataset(Dataset):
    """Yields ``(transform(image), label)``; the transform gets a (3, 32, 32) uint8 tensor.

    Handing transforms a CHW uint8 tensor (not a PIL image) lets torchvision's v2 ops run
    on tensors, which is faster, and keeps one input type for every augmentation pipeline.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Transform, indices=None
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        image = torch.from_numpy(self.images[j]).permute(2, 0, 1)
        return self.transform(image), int(self.labels[j])
