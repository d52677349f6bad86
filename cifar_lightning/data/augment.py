"""albumentations inside a ``pipeline`` of ``conf/aug/*.yaml`` (torchvision v2 has the rest).

Every pipeline maps one (3, H, W) uint8 tensor to another, so a fill colour means the same in
every recipe (``data.mean`` in pixel units is ``${uint8:${data.mean}}``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class Albumentations:
    """Runs an albumentations pipeline (on (H, W, C) arrays) on our uint8 tensors, reseeding
    it from torch's generator at each call: its own random state would be copied by forked
    loader workers (all drawing alike) and never reached by ``seed``."""

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
