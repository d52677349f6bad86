"""Batched augmentation: exact shifts, and the statistics of its per-image random draws."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torchvision.transforms import v2

from cifar_lightning.data import batched_aug as B
from cifar_lightning.errors import ConfigError

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
MEAN_UINT8 = (125, 123, 114)  # round(255 * MEAN)

# The `batched:` node for seed 004's augmentation (reflect pad 2 + random crop 32, flip, one
# 8x8 cutout filled with the dataset mean with p=0.5), as it goes into conf/aug/seed004.yaml.
SEED004_BATCHED = """
batched:
  _target_: cifar_lightning.data.batched_aug.Compose
  ops:
    - _target_: cifar_lightning.data.batched_aug.RandomCrop
      padding: 2
      padding_mode: reflect
    - _target_: cifar_lightning.data.batched_aug.HorizontalFlip
      p: 0.5
    - _target_: cifar_lightning.data.batched_aug.Cutout
      size: 8
      p: 0.5
      fill: ${data.mean}
"""


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coordinate_images(n: int, size: int = 32) -> torch.Tensor:
    """Channel 0 holds 100 + row, channel 1 holds 100 + column, channel 2 is 200.

    Every pixel says where it came from, and no pixel value is 0 or the mean fill, so a
    shift, a flip and a hole can each be read off the output.
    """
    rows = torch.arange(size).view(size, 1).expand(size, size)
    cols = torch.arange(size).view(1, size).expand(size, size)
    image = torch.stack([100 + rows, 100 + cols, torch.full_like(rows, 200)]).to(torch.uint8)
    return image.unsqueeze(0).repeat(n, 1, 1, 1)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_shift_matches_padding_then_cropping(mode):
    """Every shift in the range equals F.pad + slicing, pixel for pixel."""
    torch.manual_seed(0)
    p = 4
    shifts = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)]
    images = torch.randint(0, 256, (len(shifts), 3, 32, 32), dtype=torch.uint8)
    dy = torch.tensor([s[0] for s in shifts])
    dx = torch.tensor([s[1] for s in shifts])
    fill = B._Fill(MEAN, "test")
    out = B.shift_images(images, dy, dx, mode, fill)
    value = 0.0 if mode == "reflect" else 1.0  # constant: pad with a marker, replaced below
    padded = F.pad(images.float(), (p, p, p, p), mode=mode, value=-value)
    for n, (sy, sx) in enumerate(shifts):
        ref = padded[n, :, p + sy : p + sy + 32, p + sx : p + sx + 32]
        if mode == "constant":
            ref = torch.where(ref < 0, torch.tensor(MEAN_UINT8).float().view(3, 1, 1), ref)
        assert torch.equal(out[n].float(), ref), (sy, sx)


def test_crop_offsets_cover_the_whole_range_evenly():
    n, p = 9000, 4
    out = B.RandomCrop(padding=p)(coordinate_images(n), gen())
    # The centre pixel (16, 16) is never padding for |shift| <= 4: it tells the shift.
    dy = out[:, 0, 16, 16].long() - 100 - 16
    dx = out[:, 1, 16, 16].long() - 100 - 16
    for shift in (dy, dx):
        counts = torch.bincount(shift + p, minlength=2 * p + 1)
        assert len(counts) == 2 * p + 1  # nothing outside [-p, p]
        assert (counts > 0).all()  # every offset, the extremes included
        share = counts.float() / n
        assert share.min() > 1 / 9 - 0.025 and share.max() < 1 / 9 + 0.025
    assert abs(torch.corrcoef(torch.stack([dy.float(), dx.float()]))[0, 1]) < 0.05
    # Zero padding: pixels shifted in from outside are 0 in every channel.
    corner = out[dy == -p][:, :, 0, 0]
    assert (corner == 0).all()


def test_reflect_crop_never_shows_padding_and_mirrors():
    out = B.RandomCrop(padding=2, padding_mode="reflect")(coordinate_images(500), gen())
    rows = out[:, 0].long() - 100
    assert rows.min() >= 0 and rows.max() <= 31  # every pixel comes from the image
    dy = rows[:, 16, 16] - 16
    assert set(dy.tolist()) == {-2, -1, 0, 1, 2}
    # shifted up by 2: the top rows mirror rows 2, 1 (not the edge row repeated)
    up = rows[dy == -2][0]
    assert up[:3, 0].tolist() == [2, 1, 0]


def test_translate_spreads_over_its_range_and_fills():
    out = B.Translate(max_shift=3, fill=1.0)(coordinate_images(4000), gen(1))
    dx = out[:, 1, 16, 16].long() - 100 - 16
    assert set(dx.tolist()) == set(range(-3, 4))
    moved_right = out[dx == 3]
    assert (moved_right[:, :, :, -3:] == 255).all()  # uncovered edge: fill 1.0 = 255


def test_flip_rate_is_about_one_half_and_flips_whole_images():
    images = coordinate_images(10000)
    out = B.HorizontalFlip(p=0.5)(images, gen(2))
    flipped = (out == images.flip(3)).flatten(1).all(1)
    kept = (out == images).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # each image either mirrored whole or untouched
    assert abs(flipped.float().mean().item() - 0.5) < 0.02
    assert not B.HorizontalFlip(p=0.0)(images[:10], gen()).ne(images[:10]).any()


def test_cutout_area_position_probability_and_fill():
    n = 8000
    images = coordinate_images(n)
    out = B.Cutout(size=8, p=0.5, fill=list(MEAN))(images, gen(3))
    hole = (out != images).any(1)  # (n, 32, 32): where anything changed
    area = hole.flatten(1).sum(1)
    assert set(area.unique().tolist()) == {0, 64}  # no hole, or exactly one 8x8
    assert abs((area > 0).float().mean().item() - 0.5) < 0.02
    holed = out[area > 0]
    mask = hole[area > 0]
    for c, value in enumerate(MEAN_UINT8):  # the fill: the dataset mean, in every channel
        assert (holed[:, c][mask] == value).all()
    # a square, wholly inside, its top-left corner anywhere in [0, 24] on both axes
    ys = mask.any(2).float().argmax(1)
    xs = mask.any(1).float().argmax(1)
    assert ys.min() == 0 and ys.max() == 24 and xs.min() == 0 and xs.max() == 24
    for k in range(20):
        y, x = int(ys[k]), int(xs[k])
        assert mask[k, y : y + 8, x : x + 8].all()


def test_seed004_batched_spec():
    """The spec given for conf/aug/seed004.yaml: every part has the seed's statistics."""
    cfg = OmegaConf.create(SEED004_BATCHED)
    cfg.data = {"mean": list(MEAN)}
    aug = instantiate(cfg.batched)
    assert [type(op).__name__ for op in aug.ops] == ["RandomCrop", "HorizontalFlip", "Cutout"]
    n = 8000
    images = coordinate_images(n)
    out = aug(images, gen(4))
    hole = (out[:, 2] != 200) & ((out == torch.tensor(MEAN_UINT8).view(1, 3, 1, 1)).all(1))
    area = hole.flatten(1).sum(1)
    assert set(area.unique().tolist()) == {0, 64}
    assert abs((area > 0).float().mean().item() - 0.5) < 0.02
    # Outside the hole every pixel comes from the image (reflect: never a padding value).
    rows = out[:, 0].long() - 100
    assert rows[~hole].min() >= 0 and rows[~hole].max() <= 31
    # Flip and shift, read off two pixels outside any hole's reach where possible.
    cols = out[:, 1].long() - 100
    no_hole = area == 0
    left, right = cols[no_hole, 16, 15], cols[no_hole, 16, 16]
    flipped = left > right
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    dx = torch.where(flipped, 31 - right, right) - 16
    assert set(dx.tolist()) == {-2, -1, 0, 1, 2}


def test_ops_are_seeded_and_per_image():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    aug = B.Compose([B.RandomCrop(4), B.HorizontalFlip(), B.Cutout(8, p=0.5)])
    a, b = aug(images, gen(7)), aug(images, gen(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(images, gen(8)))
    same = coordinate_images(64)
    out = aug(same, gen(9))
    assert len({o.numpy().tobytes() for o in out}) > 32  # identical inputs, varied outputs


def test_normalize_is_bit_identical_to_torchvision():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    ref = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(MEAN), list(STD))])
    assert torch.equal(B.Normalize(MEAN, STD)(images), torch.stack([ref(x) for x in images]))


def test_per_image_counterpart_is_the_seeds_pipeline():
    aug = B.Compose([B.RandomCrop(2, "reflect"), B.HorizontalFlip(), B.Cutout(8, 0.5, MEAN)])
    pipeline = aug.per_image(32, MEAN, STD)
    names = [type(t).__name__ for t in pipeline.transforms]
    assert names == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Compose",  # the RandomErasing holes, on the tensor
        "Normalize",
    ]
    out = pipeline(Image.fromarray(torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    # No augmentation: the same floats as the batched path, up to rounding.
    plain = B.Compose([]).per_image(32, MEAN, STD)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    batched = B.Normalize(MEAN, STD)(images)
    for image, expected in zip(images, batched, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        torch.testing.assert_close(plain(pil), expected)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: B.RandomCrop(4, padding_mode="edge"), "padding_mode='edge' is not supported"),
        (lambda: B.RandomCrop(-1), "padding=-1 must be 0 or more"),
        (lambda: B.Cutout(8, p=1.5), "p=1.5 must be in [0, 1]"),
        (lambda: B.Cutout(8, fill=2), "fill=2 must be one value or one per channel"),
        (lambda: B.HorizontalFlip(p=-0.1), "p=-0.1 must be in [0, 1]"),
    ],
)
def test_bad_op_settings_are_config_errors(make, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()
