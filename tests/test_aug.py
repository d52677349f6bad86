"""Every aug= pipeline: keeps shape, dtype and range; random; repeatable under a seed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.transforms import v2

from cifar_lightning.data.augment import Albumentations
from cifar_lightning.run.config import CONFIG_DIR, build, compose_config, uint8

AUGS = sorted(p.stem for p in (Path(CONFIG_DIR) / "aug").glob("*.yaml"))
MEAN_PIXELS = [125, 123, 114]  # CIFAR-10's mean (0.4914, 0.4822, 0.4465) x 255, rounded


def pipeline(name: str, *overrides: str):
    return build(compose_config([f"aug={name}", *overrides]).aug.pipeline, "aug")


@pytest.fixture(scope="module")
def images():
    """Smooth, textured images: every geometric or colour change shows in the pixels."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 256, (8, 3, 4, 4), generator=g, dtype=torch.uint8)
    return coarse.repeat_interleave(8, -1).repeat_interleave(8, -2)


def test_the_seed_options_exist():
    assert {"none", "crop_flip", "seed000", "seed001", "seed003", "seed004"} <= set(AUGS)


@pytest.mark.parametrize("name", AUGS)
def test_keeps_shape_dtype_and_range(name, images):
    # Seeded: TrivialAugmentWide's 32-pixel shifts leave a wholly black image in about 0.5% of
    # draws, as torchvision's own does, so an unseeded run of 8 images failed now and then.
    torch.manual_seed(0)
    aug = pipeline(name)
    for image in images:
        out = aug(image)
        # uint8 pixels in, uint8 pixels out (0..255, not rescaled): normalization comes later.
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        assert out.float().std() > 0, "not a blank image"


@pytest.mark.parametrize("name", [a for a in AUGS if a != "none"])
def test_two_draws_differ(name, images):
    aug = pipeline(name)
    torch.manual_seed(1)
    first = torch.stack([aug(img) for img in images])
    second = torch.stack([aug(img) for img in images])
    assert not torch.equal(first, second)
    assert not torch.equal(first, images), "the pipeline must change images"


@pytest.mark.parametrize("name", AUGS)
def test_same_seed_same_images(name, images):
    """torch's seed governs every pipeline, the albumentations one included."""
    a, b = pipeline(name), pipeline(name)  # two instances: no state of their own carries over
    torch.manual_seed(7)
    first = torch.stack([a(img) for img in images])
    torch.manual_seed(7)
    second = torch.stack([b(img) for img in images])
    assert torch.equal(first, second)


def test_none_is_the_identity(images):
    assert torch.equal(pipeline("none")(images[0]), images[0])


# --- the recipes' details -------------------------------------------------------------------


def test_fill_is_the_dataset_mean_in_pixels():
    assert uint8([0.4914, 0.4822, 0.4465]) == MEAN_PIXELS
    cutout = pipeline("seed004").transforms[-1]
    assert isinstance(cutout, v2.RandomErasing) and list(cutout.value) == MEAN_PIXELS
    assert cutout.scale == (8 * 8 / 32**2,) * 2 and cutout.ratio == (1.0, 1.0) and cutout.p == 0.5
    coarse = pipeline("seed003").pipeline.transforms[2]
    assert tuple(coarse.fill) == tuple(MEAN_PIXELS)
    # ... and follows data.mean
    assert list(pipeline("seed004", "data.mean=[0,0.5,1]").transforms[-1].value) == [0, 128, 255]


def cutout(*overrides: str):
    """seed004's cutout step (torchvision's RandomErasing as the yaml sets it up)."""
    return pipeline("seed004", *overrides).transforms[-1]


def test_cutout_hides_one_full_square_with_the_fill():
    cut = cutout("aug.pipeline.transforms.2.p=1.0", "data.mean=[0.0039,0.0078,0.0118]")
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    corners = set()
    torch.manual_seed(0)
    for _ in range(200):
        out = cut(image)
        hole = (out != image).any(0)
        assert hole.sum() == 8 * 8  # wholly inside the image, never clipped
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        assert out[:, hole].unique(dim=1).flatten().tolist() == [1, 2, 3]
        corners.add((int(rows.min()), int(cols.min())))
    # Anywhere inside: top-left corners reach both edges (0 and 32 - 8).
    assert min(r for r, _ in corners) == 0 and max(r for r, _ in corners) == 24
    assert min(c for _, c in corners) == 0 and max(c for _, c in corners) == 24


def test_cutout_probability():
    cut = cutout()
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    torch.manual_seed(0)
    hit = sum(bool((cut(image) != image).any()) for _ in range(400))
    assert 160 < hit < 240


def test_seed004_shifts_by_at_most_two_pixels_with_reflection():
    """Reflect-pad 2 + crop 32: a flip-free draw is the image shifted by -2..2 each way."""
    crop = pipeline("seed004").transforms[0]
    image = torch.arange(32 * 32, dtype=torch.int64).reshape(1, 32, 32).repeat(3, 1, 1)
    seen = set()
    torch.manual_seed(0)
    for _ in range(200):
        out = crop(image)
        dy, dx = (int(v) for v in torch.nonzero(out[0] == image[0, 10, 10])[0])
        seen.add((dy - 10, dx - 10))
    assert {d for pair in seen for d in pair} == {-2, -1, 0, 1, 2}


def test_albumentations_draws_follow_torch_not_their_own_state(images):
    """A forked loader worker copies the pipeline's state; different torch seeds (as each
    worker gets) must still give different augmentations."""
    aug = Albumentations([__import__("albumentations").HorizontalFlip(p=0.5)])
    flips = []
    for seed in range(16):
        torch.manual_seed(seed)
        flips.append(torch.equal(aug(images[0]), images[0].flip(-1)))
    assert 0 < sum(flips) < 16


def test_the_auto_augment_policies_take_their_keys():
    """crop + flip, the policy, random erasing with the mean fill: each key reaches its op."""
    auto = pipeline("autoaugment", "aug.policy=svhn", "aug.erasing=0.25").transforms
    assert [type(t) for t in auto] == [
        v2.RandomCrop, v2.RandomHorizontalFlip, v2.AutoAugment, v2.RandomErasing
    ]  # fmt: skip
    assert auto[2].policy == v2.AutoAugmentPolicy.SVHN
    assert auto[3].p == 0.25 and list(auto[3].value) == MEAN_PIXELS
    assert pipeline("autoaugment").transforms[2].policy == v2.AutoAugmentPolicy.CIFAR10
    rand = pipeline("randaugment", "aug.n=3", "aug.m=14").transforms[2]
    assert (rand.num_ops, rand.magnitude, rand.num_magnitude_bins) == (3, 14, 31)
    trivial = pipeline("trivialaugment").transforms
    assert isinstance(trivial[2], v2.TrivialAugmentWide) and trivial[3].p == 0.0  # off
