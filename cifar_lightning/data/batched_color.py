"""Colour changes of whole batches, each image with its own random factors: torchvision's
``ColorJitter`` and albumentations' ``RandomBrightnessContrast`` and ``HueSaturationValue``.

On uint8 batches each keeps its library's 8-bit arithmetic — torchvision truncates to uint8
after every step and floors the grey it blends with; albumentations' brightness-contrast is a
truncating lookup table; its HSV shift runs on OpenCV's 8-bit HSV (hue in 2° steps) — so a
recipe's batched form gives the pixels the per-image one gives, not just the same look.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from cifar_lightning.data.batched_affine import OnNumpy, _span, _uniform
from cifar_lightning.data.batched_aug import PerImage, _Op, in_slices, on_chosen
from cifar_lightning.errors import ConfigError

LUMA = (0.2989, 0.587, 0.114)  # torchvision's grey
STEPS = ("brightness", "contrast", "saturation", "hue")  # ColorJitter's, by index


def _unit(images: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Float values and the maximum they stand for (255 for uint8, 1 for floats)."""
    if images.is_floating_point():
        return images, 1.0
    return images.to(torch.float32), 255.0


def _store(x: torch.Tensor, like: torch.Tensor, bound: float) -> torch.Tensor:
    """torchvision's ``_blend`` ending: clamp, and for integers truncate (a float→uint8 cast)."""
    x = x.clamp(0, bound)
    return x if like.is_floating_point() else x.floor()


def _grey(x: torch.Tensor, floor: bool) -> torch.Tensor:
    r, g, b = x.unbind(1)
    grey = (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)
    return grey.floor() if floor else grey


class ColorJitter(_Op):
    """torchvision's ``ColorJitter``, per image: factors from ``[1 - v, 1 + v]`` (hue from
    ``[-hue, hue]``) and the four steps in an order drawn for each image."""

    _shown = ("brightness", "contrast", "saturation", "hue")

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float | Sequence[float] = 0.0,
    ) -> None:
        def factor(v, what: str):
            low, high = _span(v, f"batched ColorJitter {what}", 1.0)
            return None if (low, high) == (1.0, 1.0) else (max(low, 0.0), high)

        self.brightness, self.contrast = (
            factor(brightness, "brightness"),
            factor(contrast, "contrast"),
        )
        self.saturation = factor(saturation, "saturation")
        low, high = _span(hue, "batched ColorJitter hue")
        if not -0.5 <= low <= high <= 0.5:
            raise ConfigError(f"batched ColorJitter hue={hue} must lie within [-0.5, 0.5].")
        self.hue = None if (low, high) == (0.0, 0.0) else (low, high)

    def sample(self, n: int, g: torch.Generator, device) -> dict:
        draw = {k: getattr(self, k) for k in ("brightness", "contrast", "saturation", "hue")}
        p = {k: None if r is None else _uniform(*r, n, g, device).float() for k, r in draw.items()}
        p["order"] = torch.rand(n, 4, generator=g, device=device).argsort(dim=1)
        return p

    def apply(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        """Four steps; in each, every image takes its own op. Brightness, contrast and
        saturation are all ``x * f + target * (1 - f)`` (target 0, the grey mean, the grey),
        so a step is one blend with per-image ``f`` and target, not three ops and a choice."""
        n = images.shape[0]
        if all(p[k] is None for k in ("contrast", "saturation", "hue")):  # the order is moot
            if p["brightness"] is None:
                return images
            # torchvision's adjust_brightness: uint8 × float is float; the cast back truncates.
            bound = 1.0 if images.is_floating_point() else 255.0
            out = (images * p["brightness"].view(n, 1, 1, 1)).clamp_(0, bound)
            return out if images.is_floating_point() else out.to(images.dtype)
        x, bound = _unit(images)
        integer = not images.is_floating_point()
        x = x if integer else x.clone()  # a uint8 batch was copied to float already
        one = x.new_ones(n)
        factors = [one if p[k] is None else p[k] for k in ("brightness", "contrast", "saturation")]
        # Each image's order with the unused steps left out: as many steps as ops in use.
        used = torch.tensor([p[k] is not None for k in STEPS], device=x.device)
        order = p["order"][used[p["order"]]].view(n, int(used.sum()))
        table = torch.stack([*factors, one], dim=1)  # (n, 4): each image's factor per op
        for step in range(order.shape[1]):
            which = order[:, step]
            if p["hue"] is not None:
                hued = self._hue(x, p["hue"], images.dtype)
                x = torch.where((which == 3).view(n, 1, 1, 1), hued, x)
            f = table.gather(1, which.view(n, 1)).view(n, 1, 1, 1)
            grey = _grey(x, integer)
            target = torch.where((which == 1).view(n, 1, 1, 1), grey.mean(dim=(2, 3), keepdim=True),
                                 grey * (which == 2).view(n, 1, 1, 1))  # fmt: skip
            # An image whose slot this step is a skipped op has f = 1 and target 0: unchanged.
            x = x.mul_(f).add_(target.mul(1 - f)).clamp_(0, bound)  # in place: one float batch
            if integer:
                x = x.floor_()
        return x if images.is_floating_point() else x.to(images.dtype)

    @staticmethod
    def _hue(x: torch.Tensor, factor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """torchvision's ``adjust_hue``: through [0, 1] floats and HSV, and back."""
        from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv

        unit = x / 255 if dtype == torch.uint8 else x
        hsv = _rgb_to_hsv(unit)
        h, s, v = hsv.unbind(1)
        h = (h + factor.view(-1, 1, 1)) % 1.0
        rgb = _hsv_to_rgb(torch.stack((h, s, v), 1))
        if dtype == torch.uint8:
            return TF.to_dtype(rgb, torch.uint8, scale=True).to(torch.float32)
        return rgb

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], g, images.device)
        return in_slices(images, self.apply, params, self.float_batches)

    @property
    def float_batches(self) -> float:
        """Float copies of its input ``apply`` holds at its peak, measured: one for brightness
        alone, three with the blends, ten with the hue's HSV round trip (for in_slices)."""
        if self.hue is not None:
            return 10.0
        return 1.0 if self.contrast is None and self.saturation is None else 3.0

    def per_image(self, size: int) -> PerImage:
        ranges = (self.brightness, self.contrast, self.saturation, self.hue)
        return PerImage(T.ColorJitter(*(list(r) if r else 0 for r in ranges)))


class _Sometimes(_Op):
    """An albumentations colour op: ``sample`` draws ``apply`` (p) and its values per image,
    ``apply`` changes a batch; only the chosen images change."""

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], g, images.device)
        return on_chosen(images, params["apply"], self.apply, params, self.float_batches)

    def apply_to(
        self, images: torch.Tensor, chosen: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        """The op on the ``chosen`` images for sure, whatever ``p`` (as OneOf calls it), its
        slices sized against the whole batch: called on the chosen few alone, a 128-image
        batch's 19 chosen went through ``apply`` 2 at a time."""
        params = self.sample(images.shape[0], g, images.device)
        return on_chosen(images, chosen, self.apply, params, self.float_batches)


class BrightnessContrast(_Sometimes):
    """albumentations' ``RandomBrightnessContrast`` per image, with probability ``p``:
    ``x * (1 + c) + b * 255``, ``c`` from ``contrast_limit`` and ``b`` from
    ``brightness_limit``, clipped and truncated to uint8 as its lookup table does."""

    _shown = ("brightness_limit", "contrast_limit", "p")
    float_batches = 4.5  # float copies of its input ``apply`` holds at its peak, measured

    def __init__(
        self,
        brightness_limit: float | Sequence[float] = 0.2,
        contrast_limit: float | Sequence[float] = 0.2,
        p: float = 0.5,
    ) -> None:
        self.brightness_limit = _span(brightness_limit, "batched BrightnessContrast brightness")
        self.contrast_limit = _span(contrast_limit, "batched BrightnessContrast contrast")
        self.p = _probability(p, "BrightnessContrast")

    def sample(self, n: int, g: torch.Generator, device) -> dict:
        return {
            "apply": torch.rand(n, generator=g, device=device) < self.p,
            "alpha": 1 + _uniform(*self.contrast_limit, n, g, device).float(),
            "beta": _uniform(*self.brightness_limit, n, g, device).float(),
        }

    def apply(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        x, bound = _unit(images)
        n = x.shape[0]
        out = x * p["alpha"].view(n, 1, 1, 1) + p["beta"].view(n, 1, 1, 1) * bound
        out = _store(out, images, bound)
        return out if images.is_floating_point() else out.to(images.dtype)

    def per_image(self, size: int) -> PerImage:
        import albumentations as A

        return PerImage(
            OnNumpy(
                A.RandomBrightnessContrast(self.brightness_limit, self.contrast_limit, p=self.p)
            )
        )


class HueSaturationValue(_Sometimes):
    """albumentations' ``HueSaturationValue`` per image, with probability ``p``, on OpenCV's
    8-bit HSV: hue (0–179, 2° steps) shifted within ``hue_shift_limit`` and wrapped,
    saturation and value within their limits (grey pixels stay grey)."""

    _shown = ("hue_shift_limit", "sat_shift_limit", "val_shift_limit", "p")
    float_batches = 8.0  # float copies of its input ``apply`` holds at its peak, measured

    def __init__(
        self,
        hue_shift_limit: float | Sequence[float] = 20,
        sat_shift_limit: float | Sequence[float] = 30,
        val_shift_limit: float | Sequence[float] = 20,
        p: float = 0.5,
    ) -> None:
        self.hue_shift_limit = _span(hue_shift_limit, "batched HueSaturationValue hue")
        self.sat_shift_limit = _span(sat_shift_limit, "batched HueSaturationValue saturation")
        self.val_shift_limit = _span(val_shift_limit, "batched HueSaturationValue value")
        self.p = _probability(p, "HueSaturationValue")

    def sample(self, n: int, g: torch.Generator, device) -> dict:
        return {
            "apply": torch.rand(n, generator=g, device=device) < self.p,
            "hue": _uniform(*self.hue_shift_limit, n, g, device).float(),
            "sat": _uniform(*self.sat_shift_limit, n, g, device).float(),
            "val": _uniform(*self.val_shift_limit, n, g, device).float(),
        }

    def apply(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        x, bound = _unit(images)
        n = x.shape[0]
        rgb = x * (255 / bound)  # OpenCV's 8-bit scale
        hue, sat, val = rgb_to_hsv8(rgb)
        hue = torch.floor(torch.remainder(hue + p["hue"].view(n, 1, 1), 180))
        sat = torch.where(sat == 0, sat, (sat + p["sat"].view(n, 1, 1)).round().clamp(0, 255))
        val = (val + p["val"].view(n, 1, 1)).round().clamp(0, 255)
        out = hsv8_to_rgb(hue, sat, val).round() * (bound / 255)
        if images.is_floating_point():
            out = out.clamp(0, 1)
        return out if images.is_floating_point() else out.to(images.dtype)

    def per_image(self, size: int) -> PerImage:
        import albumentations as A

        limits = (self.hue_shift_limit, self.sat_shift_limit, self.val_shift_limit)
        return PerImage(OnNumpy(A.HueSaturationValue(*limits, p=self.p)))


def rgb_to_hsv8(rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """OpenCV's ``COLOR_RGB2HSV`` for 8-bit images: hue 0–179 (degrees / 2), saturation and
    value 0–255, each rounded to whole numbers."""
    r, g, b = rgb.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)  # 5x faster than max over the channel dim
    diff = v - torch.minimum(torch.minimum(r, g), b)
    safe = diff.clamp(min=1e-12)
    # The sector's numerator and offset picked first, then one division (the same values as
    # dividing in each branch, in a third of the time).
    red, green = v == r, v == g
    numerator = torch.where(red, g - b, torch.where(green, b - r, r - g))
    offset = torch.where(red, 0.0, torch.where(green, 120.0, 240.0))
    h = offset + 60 * numerator / safe
    h = torch.where(diff == 0, torch.zeros_like(h), torch.remainder(h, 360))
    s = torch.where(v > 0, 255 * diff / v.clamp(min=1e-12), torch.zeros_like(v))
    return torch.remainder((h / 2).round(), 180), s.round(), v


def hsv8_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """OpenCV's ``COLOR_HSV2RGB`` for 8-bit images, before its rounding: (N, 3, H, W) floats.
    Per channel ``v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (m + hue / 60) mod 6`` with
    ``m`` = 5, 3, 1 for red, green, blue: the six-sector table in three expressions."""
    sector = (h * 2 / 60).unsqueeze(1)
    m = torch.tensor([5.0, 3.0, 1.0], dtype=sector.dtype, device=sector.device).view(1, 3, 1, 1)
    k = torch.remainder(m + sector, 6)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    v = v.unsqueeze(1)
    return v - v * (s / 255).unsqueeze(1) * ramp


def _probability(p: float, what: str) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"batched {what} p={p} must be in [0, 1].")
    return float(p)
