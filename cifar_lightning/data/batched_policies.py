"""torchvision v2's auto-augment policies on whole batches: ``AutoAugment``, ``RandAugment``
and ``TrivialAugmentWide``, each image drawing its own operation(s), magnitude(s) and signs as
torchvision's per-image transform does.

The op spaces (magnitude bins, which ops are signed) and AutoAugment's sub-policies are read
from torchvision's own classes, so the tables cannot drift from the per-image transform. Each
op keeps torchvision's uint8 arithmetic (truncating casts, the floored grey, the rounded blur
with its border left alone, nearest sampling with a black fill), so with the same draws an
image gets the pixels torchvision gives it (tests/test_batched_policies.py).

One slot of a policy (one op per image) runs as a few batched steps, not one per op: the five
geometric ops are one nearest gather through a per-image affine map; brightness, colour and
contrast are one blend with a per-image factor and target; posterize, solarize and invert one
uint8 mask and threshold; sharpness, autocontrast and equalize on the images that drew them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torchvision import transforms as T
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional._color import _rgb_to_grayscale_image

from cifar_lightning.data.batched_affine import nearest, torchvision_grid, torchvision_inverse
from cifar_lightning.data.batched_aug import PerImage, _Op, _rows, in_slices
from cifar_lightning.errors import ConfigError

# Every op of the three policies, by id (AutoAugment adds Invert to RandAugment's 14).
OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
    "Invert",
)  # fmt: skip
ID = {name: i for i, name in enumerate(OPS)}
GEOMETRIC = [ID[k] for k in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")]
BLENDS = [ID[k] for k in ("Brightness", "Color", "Contrast")]
POINTWISE = [ID[k] for k in ("Posterize", "Solarize", "Invert")]


def _in(op: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """Where ``op`` is one of ``ids``: compared one by one with Python ints, since a tensor of
    them would be a host-to-device copy per batch (which waits for the queued work)."""
    found = op == ids[0]
    for i in ids[1:]:
        found |= op == i
    return found


@functools.cache
def _tables(space_of: type, bins: int, h: int, w: int, device: torch.device) -> tuple:
    """An op space as tensors: ``ops`` (ids, in torchvision's key order), ``magnitudes``
    (per op id and bin, float64 of torchvision's float32 values; 0 for ops without one) and
    ``signed`` (per op id). Built once per space, size and device."""
    space = space_of._AUGMENTATION_SPACE
    magnitudes = torch.zeros(len(OPS), bins, dtype=torch.float64)
    signed = torch.zeros(len(OPS), dtype=torch.bool)
    for name, (values, is_signed) in space.items():
        made = values(bins, h, w)
        if made is not None:
            magnitudes[ID[name]] = made.to(torch.float64)
        signed[ID[name]] = is_signed
    ops = torch.tensor([ID[name] for name in space])
    return ops.to(device), magnitudes.to(device), signed.to(device)


def _signed(magnitude: torch.Tensor, signed: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """torchvision's sign: negative where ``torch.rand(()) <= 0.5``, for signed ops only."""
    flip = torch.rand(magnitude.shape, generator=g, device=magnitude.device) <= 0.5
    return torch.where(flip & signed, -magnitude, magnitude)


def apply_ops(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """Image ``n`` through op ``op[n]`` (an id in ``OPS``) at its signed ``magnitude[n]``, as
    torchvision's ``_apply_image_or_video_transform`` does to one image."""
    if _index_on_host(images):
        return _by_group(images, op, magnitude)
    params = {"op": op, "magnitude": magnitude}
    for ids, change, floats in GROUPS:
        # Every image through every group, each keeping its own op's result: indexing by a
        # mask would make the host wait for the device.
        def picked(part: torch.Tensor, p: dict, ids=ids, change=change) -> torch.Tensor:
            chosen = _in(p["op"], ids).view(-1, 1, 1, 1)
            return torch.where(chosen, change(part, p), part)

        images = in_slices(images, picked, params, floats)
    return images


def _by_group(images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """On a CPU, each group's images alone: the batch sorted by group once, each group's run
    of images changed as one slice, and the batch put back in order once (per-group indexing
    and writing back cost as much as the ops)."""
    n = images.shape[0]
    group = torch.zeros_like(op)
    for k, (ids, _, _) in enumerate(GROUPS, start=1):
        group = torch.where(_in(op, ids), k, group)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=len(GROUPS) + 1).tolist()
    x = images[order]
    params = {"op": op[order], "magnitude": magnitude[order]}
    start = counts[0]  # Identity first: as it is
    for (_, change, floats), count in zip(GROUPS, counts[1:], strict=True):
        if count:
            part = slice(start, start + count)
            x[part] = in_slices(x[part], change, _rows(params, part, n), floats, n)
        start += count
    return x[torch.argsort(order)]  # back in the batch's order


def _index_on_host(images: torch.Tensor) -> bool:
    """Whether to pick the chosen images by index (CPU) or compute all and keep some."""
    return images.device.type == "cpu"


def _warp(images: torch.Tensor, p: dict) -> torch.Tensor:
    """Nearest sampling through each image's inverse map, black outside (fill=None): one
    gather of the uint8 pixels, torchvision's grid."""
    h, w = images.shape[-2:]
    return nearest(images, *torchvision_grid(_inverse(p, h, w), h, w))


def _inverse(p: dict, h: int, w: int) -> torch.Tensor:
    """Each image's output-to-input map, as torchvision's policies call affine() or rotate():
    shears turn about the top-left corner (center=[0, 0]) by atan(magnitude); translations
    are whole pixels (int()); rotate() turns by -(angle mod 360) in affine's convention."""
    op, magnitude = p["op"], p["magnitude"]
    zero = torch.zeros_like(magnitude)
    shear = torch.rad2deg(torch.atan(magnitude))
    is_shear = (op == ID["ShearX"]) | (op == ID["ShearY"])
    return torchvision_inverse(
        torch.where(op == ID["Rotate"], -torch.remainder(magnitude, 360), zero),
        torch.where(op == ID["TranslateX"], torch.trunc(magnitude), zero),
        torch.where(op == ID["TranslateY"], torch.trunc(magnitude), zero),
        torch.ones_like(zero),
        torch.where(op == ID["ShearX"], shear, zero),
        torch.where(op == ID["ShearY"], shear, zero),
        cx=torch.where(is_shear, -w / 2, zero),
        cy=torch.where(is_shear, -h / 2, zero),
    )


BLEND_FLOATS = 1.7  # float copies of its input _blend holds at its peak, measured (1.67)


def _blend(images: torch.Tensor, p: dict) -> torch.Tensor:
    """torchvision's ``_blend(image, target, factor)``: ``image * f + target * (1 - f)`` in
    float32 (``addcmul`` rounds as ``add_(alpha=)`` does), clamped, truncated to uint8. The
    target is 0 for brightness (``image * f`` alone), the floored grey for colour, its mean
    for contrast."""
    n = images.shape[0]
    op, factor = p["op"].view(n, 1, 1, 1), (1.0 + p["magnitude"]).view(n, 1, 1, 1)
    grey = _rgb_to_grayscale_image(images, 1, preserve_dtype=False).floor_()
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
    target = torch.where(op == ID["Color"], grey, torch.where(op == ID["Contrast"], mean, 0.0))
    x = images.to(torch.float32).mul_(factor.to(torch.float32))
    x.addcmul_(target, (1.0 - factor).to(torch.float32)).clamp_(0, 255)
    return x.to(torch.uint8)


SHARPEN_FLOATS = 1.8  # float copies of its input _sharpen holds at its peak, measured (1.76)


def _sharpen(images: torch.Tensor, p: dict) -> torch.Tensor:
    """torchvision's ``adjust_sharpness``: the inner pixels move towards (or away from) a
    rounded 3x3 blur (weights 1, centre 5, over 13) by ``1 - factor``; the one-pixel border
    is left as it is. The blur is summed in int16 rather than convolved: (sum of 9 + 4 ×
    centre) / 13 is never within 1/26 of a .5, so any float order rounds it alike."""
    n = images.shape[0]
    x = images.to(torch.int16)
    h, w = x.shape[-2:]
    box = x[..., : h - 2, :].add(x[..., 1 : h - 1, :]).add_(x[..., 2:, :])  # 3 rows
    box = box[..., : w - 2].add(box[..., 1 : w - 1]).add_(box[..., 2:])  # 3 x 3
    inner = x[..., 1:-1, 1:-1]
    blurred = box.add_(inner, alpha=4).to(torch.float32).div_(13).round_()
    inner = inner.to(torch.float32)
    alpha = (-p["magnitude"]).to(torch.float32).view(n, 1, 1, 1)  # 1 - (1 + magnitude)
    inner.addcmul_(blurred.sub_(inner), alpha).clamp_(0, 255)
    out = images.clone()
    out[..., 1:-1, 1:-1] = inner.to(torch.uint8)
    return out


def _posterize_solarize(images: torch.Tensor, p: dict) -> torch.Tensor:
    """Posterize (keep the top ``int(magnitude)`` bits), solarize (invert values at or above
    ``255 * magnitude``) and invert (solarize at 0) as one mask and one threshold per image;
    posterized images get a threshold no value reaches. uint8 throughout: ``v >= t`` for a
    whole ``v`` is ``v >= ceil(t)``."""
    op, magnitude, n = p["op"], p["magnitude"], images.shape[0]
    bits = torch.where(op == ID["Posterize"], torch.trunc(magnitude), 8).long()
    mask = ((1 << bits) - 1) << (8 - bits)  # bits=8: 255, everything kept
    threshold = torch.where(op == ID["Solarize"], 255.0 * magnitude, 256.0)
    threshold = torch.where(op == ID["Invert"], 0.0, threshold).to(torch.float32).ceil()
    never = (threshold > 255).view(n, 1, 1, 1)
    x = images & mask.to(torch.uint8).view(n, 1, 1, 1)
    at = threshold.clamp(max=255).to(torch.uint8).view(n, 1, 1, 1)
    return torch.where((x >= at) & ~never, x.bitwise_not(), x)


AUTOCONTRAST_FLOATS = 1.05  # float copies of its input _autocontrast holds, measured (1.00)
EQUALIZE_FLOATS = 2.5  # torchvision's equalize: an int64 copy (two float32 batches' bytes)


def _autocontrast(images: torch.Tensor, _: dict) -> torch.Tensor:
    """torchvision's ``autocontrast`` (each channel stretched to 0..255; flat ones left), in
    its arithmetic but with ``where`` for its masked stores, which on a GPU sync the host."""
    x = images.to(torch.float32)
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = torch.where(flat, 1.0, high.sub_(low).mul_(1.0 / 255))
    low = torch.where(flat, 0.0, low)
    return x.sub_(low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def _equalize(images: torch.Tensor, _: dict) -> torch.Tensor:
    return TF.equalize(images)  # per image and channel: histograms, cumsum, a lookup table


# The groups of ops that run as one batched step: (op ids, the step, its float copies).
GROUPS: tuple[tuple[list[int], Callable, float], ...] = (
    (GEOMETRIC, _warp, 0.0),
    (BLENDS, _blend, BLEND_FLOATS),
    ([ID["Sharpness"]], _sharpen, SHARPEN_FLOATS),
    (POINTWISE, _posterize_solarize, 0.0),
    ([ID["AutoContrast"]], _autocontrast, AUTOCONTRAST_FLOATS),
    ([ID["Equalize"]], _equalize, EQUALIZE_FLOATS),
)


class _Policy(_Op):
    """A policy: ``slots`` draws, per image, the op and signed magnitude of each step."""

    def slots(
        self, n: int, g: torch.Generator, device: torch.device, size: tuple[int, int]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"{type(self).__name__} takes uint8 batches, not {images.dtype}")
        for op, magnitude in self.slots(images.shape[0], g, images.device, images.shape[-2:]):
            images = apply_ops(images, op, magnitude)
        return images


class TrivialAugmentWide(_Policy):
    """torchvision's ``TrivialAugmentWide``: per image one of its 14 ops, uniformly, at a
    magnitude bin drawn uniformly from ``num_magnitude_bins``, negated half the time."""

    _shown = ("num_magnitude_bins",)

    def __init__(self, num_magnitude_bins: int = 31) -> None:
        if num_magnitude_bins < 2:
            raise ConfigError(f"batched TrivialAugmentWide num_magnitude_bins="
                              f"{num_magnitude_bins} must be at least 2.")  # fmt: skip
        self.num_magnitude_bins = num_magnitude_bins

    def slots(self, n, g, device, size):
        ops, magnitudes, signed = _tables(v2.TrivialAugmentWide, self.num_magnitude_bins, *size,
                                          torch.device(device))  # fmt: skip
        op = ops[torch.randint(len(ops), (n,), generator=g, device=device)]
        bin_ = torch.randint(self.num_magnitude_bins, (n,), generator=g, device=device)
        return [(op, _signed(magnitudes[op, bin_], signed[op], g))]

    def per_image(self, size: int) -> PerImage:
        return PerImage(T.TrivialAugmentWide(self.num_magnitude_bins))


class RandAugment(_Policy):
    """torchvision's ``RandAugment``: per image ``num_ops`` ops in a row, each drawn uniformly
    from its 14, all at bin ``magnitude`` of ``num_magnitude_bins``, signs drawn per op."""

    _shown = ("num_ops", "magnitude", "num_magnitude_bins")

    def __init__(self, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> None:
        if num_ops < 0:
            raise ConfigError(f"batched RandAugment num_ops={num_ops} must be 0 or more.")
        if not 0 <= magnitude < num_magnitude_bins:
            raise ConfigError(f"batched RandAugment magnitude={magnitude} must be in "
                              f"0..{num_magnitude_bins - 1} (num_magnitude_bins).")  # fmt: skip
        self.num_ops, self.magnitude = num_ops, magnitude
        self.num_magnitude_bins = num_magnitude_bins

    def slots(self, n, g, device, size):
        ops, magnitudes, signed = _tables(v2.RandAugment, self.num_magnitude_bins, *size,
                                          torch.device(device))  # fmt: skip
        steps = []
        for _ in range(self.num_ops):
            op = ops[torch.randint(len(ops), (n,), generator=g, device=device)]
            steps.append((op, _signed(magnitudes[op, self.magnitude], signed[op], g)))
        return steps

    def per_image(self, size: int) -> PerImage:
        return PerImage(T.RandAugment(self.num_ops, self.magnitude, self.num_magnitude_bins))


@functools.cache
def _policy_table(policy: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """AutoAugment's sub-policies as (25, 2) tensors: op ids, probabilities, magnitude bins."""
    pairs = v2.AutoAugment(v2.AutoAugmentPolicy(policy))._policies
    ops = torch.tensor([[ID[name] for name, _, _ in pair] for pair in pairs])
    chance = torch.tensor([[p for _, p, _ in pair] for pair in pairs], dtype=torch.float32)
    bins = torch.tensor([[m or 0 for _, _, m in pair] for pair in pairs])
    return ops.to(device), chance.to(device), bins.to(device)


class AutoAugment(_Policy):
    """torchvision's ``AutoAugment`` with a learned ``policy`` (cifar10, imagenet, svhn): per
    image one of its sub-policies, uniformly; each of the pair's two ops runs with its own
    probability, at its fixed magnitude bin of 10, negated half the time."""

    _shown = ("policy",)

    def __init__(self, policy: str = "cifar10") -> None:
        known = [p.value for p in v2.AutoAugmentPolicy]
        if str(policy) not in known:
            raise ConfigError(f"batched AutoAugment policy={policy!r} must be one of "
                              f"{', '.join(known)}.")  # fmt: skip
        self.policy = str(policy)

    def slots(self, n, g, device, size):
        device = torch.device(device)
        _, magnitudes, signed = _tables(v2.AutoAugment, 10, *size, device)
        ops, chance, bins = _policy_table(self.policy, device)
        pick = torch.randint(len(ops), (n,), generator=g, device=device)
        steps = []
        for k in range(2):
            op, bin_ = ops[pick, k], bins[pick, k]
            runs = torch.rand(n, generator=g, device=device) <= chance[pick, k]
            magnitude = _signed(magnitudes[op, bin_], signed[op], g)
            steps.append((torch.where(runs, op, ID["Identity"]), magnitude))
        return steps

    def per_image(self, size: int) -> PerImage:
        return PerImage(T.AutoAugment(T.AutoAugmentPolicy(self.policy)))
