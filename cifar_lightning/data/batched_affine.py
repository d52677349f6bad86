"""Affine warps of whole batches, each image with its own random rotation, scale, shear and
shift: torchvision's ``RandomRotation``/``RandomAffine`` and albumentations' ``Affine``, with
their conventions kept (the matrix, the pixel grid, the interpolation and the border), so a
recipe's batched form is its augmentation and not a look-alike.

torchvision samples through its own ``affine_grid`` (pixel centres, image centre at the
origin) with ``grid_sample(align_corners=False)`` and a zero or ``fill`` border; albumentations
composes its matrix about (w/2 - 0.5, h/2 - 0.5) and OpenCV's ``warpAffine`` reads bilinearly
with a reflect-101 border, which is ``grid_sample``'s reflection about the outer pixel centres.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from cifar_lightning.data.batched_aug import Fill, PerImage, _Fill, _Op, in_slices, on_chosen
from cifar_lightning.errors import ConfigError


def _span(value: float | Sequence[float] | None, what: str, centre: float = 0.0) -> tuple:
    """torchvision's ranges: one number ``v`` means ``[centre - v, centre + v]``."""
    if value is None:
        return (centre, centre)
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{what}={value} must be 0 or more (or a [min, max] pair).")
        return (centre - float(value), centre + float(value))
    low, high = (float(v) for v in value)
    if low > high:
        raise ConfigError(f"{what}={list(value)} must be [min, max] with min <= max.")
    return (low, high)


def _uniform(low: float, high: float, n: int, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device, dtype=torch.float64)


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images if images.is_floating_point() else images.to(torch.float32)


def _back(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return out if like.is_floating_point() else out.round_().clamp_(0, 255).to(like.dtype)


def torchvision_inverse(
    angle: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    scale: torch.Tensor,
    shear_x: torch.Tensor,
    shear_y: torch.Tensor,
    cx: torch.Tensor | None = None,
    cy: torch.Tensor | None = None,
) -> torch.Tensor:
    """(N, 2, 3) output-to-input maps, as torchvision's ``_get_inverse_affine_matrix``
    builds them for one image (angles in degrees): about the image centre, or about
    (``cx``, ``cy``) from it (its ``center_f``; the auto-augment shears turn about the
    top-left corner)."""
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    m = torch.stack((d, -b, torch.zeros_like(d), -c, a, torch.zeros_like(d)), 1) / scale[:, None]
    if cx is None or cy is None:
        m[:, 2] -= m[:, 0] * tx + m[:, 1] * ty
        m[:, 5] -= m[:, 3] * tx + m[:, 4] * ty
    else:
        m[:, 2] += cx - m[:, 0] * (cx + tx) - m[:, 1] * (cy + ty)
        m[:, 5] += cy - m[:, 3] * (cx + tx) - m[:, 4] * (cy + ty)
    return m.view(-1, 2, 3)


def torchvision_grid(inverse: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's sampling grid: pixel centres about the image centre, through each map,
    normalized by half the image size (for ``align_corners=False``); written as multiply-adds,
    a (1, h·w, 3) @ (N, 3, 2) product is N tiny matmuls."""
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=inverse.device).view(1, 1, w)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=inverse.device).view(1, h, 1)
    theta = inverse.to(torch.float32) / xs.new_tensor([0.5 * w, 0.5 * h]).view(1, 2, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = torch.add(xs * t[:, 0], ys * t[:, 1]).add_(t[:, 2])  # one (N, h, w) allocation each
    gy = torch.add(xs * t[:, 3], ys * t[:, 4]).add_(t[:, 5])
    return gx, gy


@functools.cache
def _ring_table(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Flat indices of an image with a one-pixel ring around it: h·w on the ring."""
    table = torch.full((h + 2, w + 2), h * w, dtype=torch.long, device=device)
    table[1:-1, 1:-1] = torch.arange(h * w, device=device).view(h, w)
    return table.view(1, -1)


def source_pixels(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Each output pixel's source (grid_sample's nearest: rounded half to even), h·w where
    it falls outside the image. Consumes ``gx`` and ``gy`` (in place: no float copies).
    Reads outside are clamped onto a one-pixel ring around the image, and one lookup in a
    small (h+2)·(w+2) table gives each pixel of that bordered image its flat index (the
    ring: h·w): cheaper than masks of the four sides."""
    h, w = gx.shape[-2:]
    ix = gx.add_(1).mul_(w).sub_(1).div_(2).round_().clamp_(-1, w).add_(1)
    iy = gy.add_(1).mul_(h).sub_(1).div_(2).round_().clamp_(-1, h).add_(1)
    bordered = iy.mul_(w + 2).add_(ix).long().view(gx.shape[0], h * w)
    return _ring_table(h, w, gx.device).expand(gx.shape[0], -1).gather(1, bordered)


def nearest(
    images: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor, fill: torch.Tensor | None = None
) -> torch.Tensor:
    """``grid_sample(mode="nearest", align_corners=False)`` as one gather of the image's own
    values (no float copy): the same source pixel (rounded half to even), ``fill`` (a (1, C,
    1, 1) pixel; default black) where it falls outside. Consumes ``gx`` and ``gy``."""
    n, c, h, w = images.shape
    flat = source_pixels(gx, gy).view(n, 1, h * w).expand(n, c, h * w)
    outside = images.new_zeros(1, c, 1) if fill is None else fill.reshape(1, c, 1)
    source = torch.cat((images.reshape(n, c, h * w), outside.expand(n, c, 1)), dim=2)
    return source.gather(2, flat).view(n, c, h, w)


class RandomAffine(_Op):
    """torchvision's ``RandomAffine`` per image: rotation in ``degrees``, ``translate`` (a
    fraction of width and height, rounded to whole pixels), ``scale`` and ``shear`` (one
    number or a pair: along x; four numbers: x then y) drawn for each image; ``nearest`` or
    ``bilinear``; uncovered pixels get ``fill``."""

    _shown = ("degrees", "translate", "scale", "shear", "interpolation")
    sign = 1.0  # torchvision's rotate() turns the other way from affine()

    def __init__(
        self,
        degrees: float | Sequence[float] = 0.0,
        translate: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        shear: float | Sequence[float] | None = None,
        interpolation: str = "nearest",
        fill: Fill = 0.0,
    ) -> None:
        name = type(self).__name__
        self.degrees = _span(degrees, f"batched {name} degrees")
        self.translate = None if translate is None else tuple(float(t) for t in translate)
        self.scale = (1.0, 1.0) if scale is None else _span(scale, f"batched {name} scale", 1.0)
        shear = [] if shear is None else [shear] if isinstance(shear, int | float) else shear
        if len(shear) not in (0, 1, 2, 4):
            raise ConfigError(f"batched {name} shear={shear} must have 1, 2 or 4 values.")
        sx = _span(shear[0] if len(shear) == 1 else shear[:2] or None, f"batched {name} shear")
        self.shear = (*sx, *(shear[2:] if len(shear) == 4 else (0.0, 0.0)))
        if interpolation not in ("nearest", "bilinear"):
            raise ConfigError(
                f"batched {name} interpolation={interpolation!r}: nearest or bilinear."
            )
        self.interpolation, self.fill = interpolation, _Fill(fill, f"batched {name}")

    def sample(self, n: int, g: torch.Generator, device, size: tuple[int, int]) -> dict:
        h, w = size
        p = {"angle": _uniform(*self.degrees, n, g, device)}
        if self.translate is not None:
            dx, dy = self.translate[0] * w, self.translate[1] * h
            p["tx"] = torch.round(_uniform(-dx, dx, n, g, device))
            p["ty"] = torch.round(_uniform(-dy, dy, n, g, device))
        else:
            p["tx"] = p["ty"] = torch.zeros(n, dtype=torch.float64, device=device)
        p["scale"] = _uniform(*self.scale, n, g, device)
        p["shear_x"] = _uniform(*self.shear[:2], n, g, device)
        p["shear_y"] = _uniform(*self.shear[2:], n, g, device)
        return p

    def warp(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        """``images`` warped with the parameters ``p`` (one value per image)."""
        n, c, h, w = images.shape
        inverse = torchvision_inverse(
            self.sign * p["angle"], p["tx"], p["ty"], p["scale"], p["shear_x"], p["shear_y"]
        )
        gx, gy = torchvision_grid(inverse, h, w)
        if self.interpolation == "nearest":
            return nearest(images, gx, gy, self.fill.like(images))
        grid = torch.stack((gx, gy), dim=-1)
        x = _as_float(images)
        fill = self.fill.like(x)
        if not any(self.fill.values):
            out = F.grid_sample(x, grid.to(x.dtype), "bilinear", "zeros", False)
        else:  # torchvision's mask channel: where nothing was read, the fill
            ones = x.new_ones(n, 1, h, w)
            both = F.grid_sample(
                torch.cat((x, ones), 1), grid.to(x.dtype), "bilinear", "zeros", False
            )
            out, mask = both[:, :c], both[:, c:]
            out = (out - fill) * mask + fill
        return _back(out, images)

    @property
    def fill_key(self) -> tuple:
        return tuple(self.fill.values)

    @property
    def moves_pixels(self) -> bool:
        """Only a nearest warp moves whole pixels, so only it composes with crops and flips."""
        return self.interpolation == "nearest"

    def index_map(self, n: int, h: int, w: int, g: torch.Generator, dev) -> torch.Tensor:
        p = self.sample(n, g, dev, (h, w))
        inverse = torchvision_inverse(
            self.sign * p["angle"], p["tx"], p["ty"], p["scale"], p["shear_x"], p["shear_y"]
        )
        return source_pixels(*torchvision_grid(inverse, h, w)).view(n, h * w)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], g, images.device, tuple(images.shape[-2:]))
        return in_slices(images, self.warp, params, self.float_batches)

    @property
    def float_batches(self) -> float:
        """Float copies of its input a warp holds at its peak, measured: a nearest warp moves
        the uint8 pixels (none); bilinear holds input, grid and output (and, with a fill, a
        mask channel)."""
        if self.interpolation == "nearest":
            return 0.0
        return 4.0 if not any(self.fill.values) else 6.0

    def per_image(self, size: int) -> PerImage:
        shear = list(self.shear) if self.shear[2:] != (0.0, 0.0) else list(self.shear[:2])
        return PerImage(
            T.RandomAffine(
                list(self.degrees),
                self.translate,
                list(self.scale),
                shear,
                T.InterpolationMode(self.interpolation),
                fill=self.fill.pil(),
            )
        )


class RandomRotation(RandomAffine):
    """torchvision's ``RandomRotation`` per image: an angle in ``degrees`` about the centre."""

    _shown = ("degrees", "interpolation")
    sign = -1.0

    def __init__(
        self, degrees: float | Sequence[float], interpolation: str = "nearest", fill: Fill = 0.0
    ) -> None:
        super().__init__(degrees, interpolation=interpolation, fill=fill)

    def per_image(self, size: int) -> PerImage:
        mode = T.InterpolationMode(self.interpolation)
        return PerImage(T.RandomRotation(list(self.degrees), mode, fill=self.fill.pil()))


BORDERS = ("reflect101", "constant")


class AlbumentationsAffine(_Op):
    """albumentations' ``Affine`` per image, with probability ``p``: a shift of
    ``translate_percent`` of the size (truncated to whole pixels), one ``scale`` for both axes,
    a rotation in ``rotate`` degrees, about (w/2 - 0.5, h/2 - 0.5); bilinear reads, a
    ``reflect101`` (OpenCV's default) or ``constant`` border."""

    _shown = ("translate_percent", "scale", "rotate", "border", "p")

    def __init__(
        self,
        translate_percent: Sequence[float] = (0.0, 0.0),
        scale: Sequence[float] = (1.0, 1.0),
        rotate: Sequence[float] = (0.0, 0.0),
        border: str = "reflect101",
        fill: Fill = 0.0,
        p: float = 1.0,
    ) -> None:
        if border not in BORDERS:
            raise ConfigError(f"batched AlbumentationsAffine border={border!r}: one of {BORDERS}.")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched AlbumentationsAffine p={p} must be in [0, 1].")
        self.translate_percent = _span(translate_percent, "batched AlbumentationsAffine translate")
        self.scale = _span(scale, "batched AlbumentationsAffine scale", 1.0)
        self.rotate = _span(rotate, "batched AlbumentationsAffine rotate")
        self.border, self.p = border, p
        self.fill = _Fill(fill, "batched AlbumentationsAffine")

    def sample(self, n: int, g: torch.Generator, device, size: tuple[int, int]) -> dict:
        h, w = size
        return {
            "apply": torch.rand(n, generator=g, device=device) < self.p,
            "tx": torch.trunc(_uniform(*self.translate_percent, n, g, device) * w),
            "ty": torch.trunc(_uniform(*self.translate_percent, n, g, device) * h),
            "scale": _uniform(*self.scale, n, g, device),
            "rotate": _uniform(*self.rotate, n, g, device),
        }

    def warp(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        n, c, h, w = images.shape
        dev = images.device
        cx, cy = w / 2 - 0.5, h / 2 - 0.5
        r = torch.deg2rad(torch.remainder(p["rotate"], 360))
        cos, sin, s = torch.cos(r), torch.sin(r), p["scale"]
        # M = shift back @ translate @ rotate @ scale @ shift to the centre, forward.
        m = torch.zeros(n, 3, 3, dtype=torch.float64, device=dev)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos * s, sin * s, -sin * s, cos * s
        m[:, 0, 2] = cx + p["tx"] - (m[:, 0, 0] * cx + m[:, 0, 1] * cy)
        m[:, 1, 2] = cy + p["ty"] - (m[:, 1, 0] * cx + m[:, 1, 1] * cy)
        m[:, 2, 2] = 1
        back = torch.linalg.inv(m).to(torch.float32)
        ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1)
        xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w)
        row = [back[:, k, :].view(n, 3, 1, 1) for k in (0, 1)]
        src_x = row[0][:, 0] * xs + row[0][:, 1] * ys + row[0][:, 2]
        src_y = row[1][:, 0] * xs + row[1][:, 1] * ys + row[1][:, 2]
        grid = torch.stack((src_x / (w - 1), src_y / (h - 1)), -1) * 2 - 1
        x = _as_float(images)
        if self.border == "reflect101":
            out = F.grid_sample(x, grid.to(x.dtype), "bilinear", "reflection", align_corners=True)
        else:
            fill = self.fill.like(x)
            both = F.grid_sample(
                torch.cat((x, x.new_ones(n, 1, h, w)), 1),
                grid.to(x.dtype),
                "bilinear",
                "zeros",
                align_corners=True,
            )
            out = (both[:, :c] - fill) * both[:, c:] + fill
        return _back(out, images)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        params = self.sample(images.shape[0], g, images.device, tuple(images.shape[-2:]))
        return on_chosen(images, params["apply"], self.warp, params, self.float_batches)

    @property
    def float_batches(self) -> float:
        """Float copies of its input a warp holds at its peak (input, grid, output; the fill
        adds a mask channel), measured: for in_slices."""
        return 4.0 if self.border == "reflect101" else 6.0

    def per_image(self, size: int) -> PerImage:
        import albumentations as A
        import cv2

        border = cv2.BORDER_REFLECT_101 if self.border == "reflect101" else cv2.BORDER_CONSTANT
        op = A.Affine(
            translate_percent=self.translate_percent,
            scale=self.scale,
            keep_ratio=True,
            rotate=self.rotate,
            border_mode=border,
            fill=self.fill.pil(),
            p=self.p,
        )
        return PerImage(OnNumpy(op))


class OnNumpy:
    """An albumentations transform where the classic pipeline hands over a PIL image."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.fromarray(self.transform(image=np.asarray(image))["image"])

    def __repr__(self) -> str:
        return type(self.transform).__name__
