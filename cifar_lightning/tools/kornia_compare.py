"""``python -m cifar_lightning.tools.kornia_compare [--batch 512] [--threads 1]``: our batched
ops against ``kornia.augmentation`` (``pip install kornia``) on seed 000's rotation, shear-scale
affine and colour jitter — images/s per core, side by side in one run, and how far each lands
from torchvision's per-image op at the same parameters (mean absolute difference, 8-bit levels).

Why we keep our own (docs/benchmarks.md): kornia is as fast on the warps, faster on the
jitter, but draws one order of the jitter's steps for the whole batch, works on floats (so
misses torchvision's truncation to uint8 after each step), and has neither albumentations'
whole-pixel shifts nor OpenCV's 8-bit HSV.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torchvision.transforms.v2.functional as TF

from cifar_lightning.data.batched_affine import RandomAffine, RandomRotation
from cifar_lightning.data.batched_color import STEPS, ColorJitter


def images_per_s(fn: Callable[[], object], n: int, reps: int = 10) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return n * reps / (time.perf_counter() - start)


def levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).byte()


def compare(n: int) -> list[tuple[str, float, float, float, float]]:
    """(op, ours images/s, kornia images/s, ours levels off, kornia levels off) per op."""
    import kornia.augmentation as K

    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(n, 3, 8, 8, generator=g) * 255
    x = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear").byte()
    unit, every = x.float() / 255, torch.ones(n, dtype=torch.bool)
    shape = torch.tensor([n, 3, 32, 32])
    rows = []

    ours, theirs = RandomRotation(5), K.RandomRotation(5.0, resample="nearest", p=1.0)
    p = ours.sample(n, g, "cpu", (32, 32))
    tv = torch.stack([TF.rotate(x[i], float(p["angle"][i]), fill=0) for i in range(n)])
    kp = {"degrees": p["angle"].float(), "batch_prob": every, "forward_input_shape": shape}
    rows.append(("rotation ±5°, nearest", images_per_s(lambda: ours(x, g), n),
                 images_per_s(lambda: theirs(unit), n), levels(ours.warp(x, p), tv),
                 levels(to_uint8(theirs(unit, params=kp)), tv)))  # fmt: skip

    ours = RandomAffine(0, scale=[0.8, 1.2], shear=10)
    theirs = K.RandomAffine(0, scale=(0.8, 1.2), shear=10, resample="nearest", p=1.0)
    rows.append(("shear ±10°, scale 0.8–1.2", images_per_s(lambda: ours(x, g), n),
                 images_per_s(lambda: theirs(unit), n), float("nan"), float("nan")))  # fmt: skip

    ours, theirs = ColorJitter(0.2, 0.2, 0.2), K.ColorJitter(0.2, 0.2, 0.2, 0.0, p=1.0)
    p = ours.sample(n, g, "cpu")
    tv = []
    for i in range(n):
        y = x[i]
        for k in p["order"][i].tolist():
            if p[STEPS[k]] is not None:
                y = getattr(TF, f"adjust_{STEPS[k]}")(y, float(p[STEPS[k]][i]))
        tv.append(y)
    tv = torch.stack(tv)
    kp = {
        "brightness_factor": p["brightness"], "contrast_factor": p["contrast"],
        "saturation_factor": p["saturation"], "hue_factor": torch.zeros(n),
        "order": p["order"][0],  # kornia: one order for the whole batch
        "batch_prob": every, "forward_input_shape": shape,
    }  # fmt: skip
    rows.append(("ColorJitter 0.2/0.2/0.2", images_per_s(lambda: ours(x, g), n),
                 images_per_s(lambda: theirs(unit), n), levels(ours.apply(x, p), tv),
                 levels(to_uint8(theirs(unit, params=kp)), tv)))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} thread(s); levels = mean |difference| to "
          "torchvision's per-image op at the same parameters (8-bit)")  # fmt: skip
    print(f"{'op':28} {'ours img/s':>11} {'kornia img/s':>13} {'ours levels':>12} {'kornia':>8}")
    for op, a, b, da, db in compare(args.batch):
        print(f"{op:28} {a:11,.0f} {b:13,.0f} {da:12.4f} {db:8.4f}")


if __name__ == "__main__":
    main()
