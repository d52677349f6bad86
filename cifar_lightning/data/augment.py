"""Augmentation steps that torchvision v2 lacks, for the ``pipeline`` of ``conf/aug/*.yaml``.

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
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import get_size


class Cutout(v2.Transform):
    """One ``size`` x ``size`` hole filled with ``fill``, with probability ``p`` (DeVries 2017).

    The hole lies wholly inside the image at a uniformly random place (as albumentations'
    CoarseDropout puts it, which seed 004 used), so it always hides ``size``² pixels.
    """

    _transformed_types = (torch.Tensor,)

    def __init__(self, size: int = 8, fill: Sequence[float] | float = 0, p: float = 0.5) -> None:
        super().__init__()
        if size < 1 or not 0.0 <= p <= 1.0:
            raise ValueError(f"Cutout needs size >= 1 and p in [0, 1], got size={size}, p={p}")
        self.size = int(size)
        self.fill = [float(v) for v in fill] if isinstance(fill, Sequence) else [float(fill)]
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if torch.rand(()) >= self.p:
            return {"box": None}
        height, width = get_size(flat_inputs[0])
        size = min(self.size, height, width)
        top = int(torch.randint(0, height - size + 1, ()))
        left = int(torch.randint(0, width - size + 1, ()))
        return {"box": (top, left, size)}

    def transform(self, inpt: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        if params["box"] is None:
            return inpt
        top, left, size = params["box"]
        out = inpt.clone()
        fill = torch.tensor(self.fill, dtype=inpt.dtype, device=inpt.device)
        out[..., top : top + size, left : left + size] = fill.view(-1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"size={self.size}, fill={self.fill}, p={self.p}"


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
