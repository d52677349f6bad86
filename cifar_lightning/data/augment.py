"""albumentations inside a ``pipeline`` of ``conf/aug/*.yaml`` (torchvision v2 has the rest).

Every pipeline takes and returns one (3, H, W) uint8 tensor: pixel values, not normalized
ones, so a fill colour means the same in every recipe (``data.mean`` in pixel units is
``${uint8:${data.mean}}``). Normalization follows in the DataModule. Randomness comes from
torch's generator, so ``seed`` (and Lightning's per-worker seeding) governs every recipe,
albumentations ones included.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class Albumentations:
    """Runs an albumentations pipeline on our (3, H, W) uint8 tensors.

    albumentations works on (H, W, C) numpy arrays and keeps its own random state, which a
    forked DataLoader worker would copy — every worker would then draw the same
    augmentations — and which ``seed`` would not reach. So each call reseeds the pipeline
    from torch's generator: one cheap draw that makes albumentations as reproducible (and as
    different per worker) as torchvision's transforms.
    """

    def __init__(self, transforms: Sequence[Any]) -> None:
        import albumentations as A  # loads OpenCV: only when a recipe uses it

        self.pipeline = A.Compose(list(transforms))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, ()))
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
        out = self.pipeline(image=hwc)["image"]
        return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"
