"""Augmentation of whole batches, each image with its own random draw, in tensor ops only.

An aug's ``pipeline:`` runs one image at a time in Python on the CPU, which sets the pace for
nets this small; these ops (an aug's ``batched:`` node) draw a whole (N, C, H, W) uint8 batch's
parameters at once on any device, and each matches its ``per_image`` counterpart in
distribution. Fills are fractions of full intensity per channel, like ``data.mean``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchvision import transforms as T

from cifar_lightning.errors import ConfigError

Fill = float | Sequence[float]
PADDING_MODES = ("constant", "reflect")


@dataclass(frozen=True)
class BatchPosition:
    """Which images (indices into the ``num_images`` resident ones), epoch and seed a batch
    has: what ops that set ``uses_position`` get besides the generator."""

    indices: torch.Tensor
    epoch: int
    seed: int
    num_images: int


@dataclass(frozen=True)
class PerImage:
    """An op's per-image counterpart in torchvision's classic transforms (PIL or tensor)."""

    transform: Callable
    tensor_only: bool = False


class _Fill:
    """A fill value (0..1, one or one per channel) as a (1, C, 1, 1) tensor in image units,
    built once per device and dtype: a host-to-device copy per batch waits for queued work."""

    def __init__(self, fill: Fill, what: str) -> None:
        values = [fill] if isinstance(fill, int | float) else list(fill)
        if not values or any(not 0.0 <= float(v) <= 1.0 for v in values):
            raise ConfigError(
                f"{what} fill={fill!r} must be one value or one per channel, each in [0, 1] "
                "(a fraction of full intensity, like data.mean).",
                fix="e.g. fill: 0 (black) or fill: ${data.mean} (the dataset mean)",
            )
        self.values = [float(v) for v in values]
        self._cache: dict[tuple, torch.Tensor] = {}

    def _per_channel(self, channels: int) -> list[float]:
        return self.values * channels if len(self.values) == 1 else self.values

    def pil(self, channels: int = 3) -> tuple[int, ...]:
        """The fill as PIL wants it: one 0..255 integer per channel."""
        return tuple(round(v * 255) for v in self._per_channel(channels))

    def like(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[1]
        key = (images.device, images.dtype, channels)
        if key not in self._cache:
            values = self._per_channel(channels)
            if len(values) != channels:
                raise ValueError(f"fill {self.values} for {channels}-channel images")
            t = torch.tensor(values, dtype=torch.float32)
            if images.dtype == torch.uint8:
                t = (t * 255).round()
            self._cache[key] = t.to(images.dtype).view(1, channels, 1, 1).to(images.device)
        return self._cache[key]


def _source_index(
    size: int, shift: torch.Tensor, padding_mode: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Along one axis, output pixel ``i`` of image ``n`` reads ``i + shift[n]``: those (N, size)
    indices and, for ``constant``, the mask of reads inside the image (``reflect`` mirrors
    without repeating the edge pixel, like ``F.pad(mode="reflect")``)."""
    src = torch.arange(size, device=shift.device).unsqueeze(0) + shift.unsqueeze(1)
    if padding_mode == "reflect":
        last = size - 1
        return last - (last - src.abs()).abs(), None
    return src.clamp(0, size - 1), (src >= 0) & (src < size)


def shift_images(
    images: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    padding_mode: str = "constant",
    fill: _Fill | None = None,
) -> torch.Tensor:
    """Shift image ``n`` by (``dy[n]``, ``dx[n]``) pixels in one gather, with no padded copy
    (cropping a padded image at offset ``o`` is a shift by ``o - padding``). Index arithmetic
    serves reflect and constant borders alike and works on uint8 everywhere (``F.pad``'s
    reflect takes no uint8 on CPU); a constant border reads from one extra fill pixel."""
    n, c, h, w = images.shape
    rows, row_ok = _source_index(h, dy, padding_mode)
    cols, col_ok = _source_index(w, dx, padding_mode)
    flat = rows.view(n, h, 1) * w + cols.view(n, 1, w)  # source pixel of each output pixel
    source = images.reshape(n, c, h * w)
    if row_ok is not None and col_ok is not None:
        inside = row_ok.view(n, h, 1) & col_ok.view(n, 1, w)
        flat = torch.where(inside, flat, h * w)
        fill_pixel = fill.like(images) if fill is not None else images.new_zeros(1, c, 1, 1)
        source = torch.cat([source, fill_pixel.view(1, c, 1).expand(n, c, 1)], dim=2)
    index = flat.view(n, 1, h * w).expand(n, c, h * w)
    return source.gather(2, index).view(n, c, h, w)


def _uniform_ints(low: int, high: int, n: int, g: torch.Generator, device) -> torch.Tensor:
    """``n`` integers, each uniform on ``[low, high]`` (both ends included)."""
    return torch.randint(low, high + 1, (n,), generator=g, device=device)


def in_box(
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor | int,
    width: torch.Tensor | int,
    size: tuple[int, int],
) -> torch.Tensor:
    """(N, H, W): whether each pixel lies in its image's rectangle (``top``, ``left``: one per
    image; ``height``, ``width``: one per image or one for all), as rows times columns."""
    (h, w), n, dev = size, top.shape[0], top.device
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    top, left = top.view(n, 1, 1), left.view(n, 1, 1)
    # A Python int stays one: a tensor of it would be a host-to-device copy on a GPU.
    height = height.view(n, 1, 1) if torch.is_tensor(height) else height
    width = width.view(n, 1, 1) if torch.is_tensor(width) else width
    return ((rows >= top) & (rows < top + height)) & ((cols >= left) & (cols < left + width))


def in_slices(
    images: torch.Tensor, change: Callable, params: dict, float_batches: float, total: int = 0
) -> torch.Tensor:
    """``change(images, params)``, over slices of the batch small enough that the float32
    copies ``change`` holds at its peak (``float_batches`` times its input's size, measured:
    tests/test_batched_aug.py) stay within one float32 batch of ``total`` images (default:
    these): the device loader's memory bound. In one go where they fit already."""
    n = images.shape[0]
    step = max(1, int((total or n) / float_batches)) if float_batches > 1 else n
    if step >= n:
        return change(images, params)
    out = torch.empty_like(images)
    for start in range(0, n, step):
        part = slice(start, start + step)
        out[part] = change(images[part], _rows(params, part, n)).to(images.dtype)
    return out


def _rows(params: dict, rows: slice | torch.Tensor, n: int) -> dict:
    """Each per-image parameter (a tensor of ``n`` rows) at ``rows``; the rest as they are."""
    return {k: v[rows] if torch.is_tensor(v) and v.shape[:1] == (n,) else v
            for k, v in params.items()}  # fmt: skip


def on_chosen(
    images: torch.Tensor,
    chosen: torch.Tensor,
    change: Callable,
    params: dict,
    float_batches: float = 1.0,
):
    """``change(images, params)`` for the images where ``chosen``, the rest as they are. On a
    CPU only the chosen images are computed (an op with ``p=0.3`` costs 30%); on a GPU all are
    and then picked, since choosing by index would wait for the device (a host sync). Either
    way in slices that keep ``change``'s float copies within one float32 batch (in_slices)."""
    n = images.shape[0]
    if images.device.type != "cpu":

        def picked(part: torch.Tensor, p: dict) -> torch.Tensor:
            changed = change(part, p).to(part.dtype)
            return torch.where(p["_chosen"].view(-1, 1, 1, 1), changed, part)

        return in_slices(images, picked, {**params, "_chosen": chosen}, float_batches)
    index = chosen.nonzero().squeeze(1)
    out = images.clone()
    if len(index):
        sub = _rows(params, index, n)
        out[index] = in_slices(images[index], change, sub, float_batches, total=n)
    return out


class _Op:
    """Shows an op as its class and the settings named in ``_shown``."""

    _shown: tuple[str, ...] = ()

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._shown)
        return f"{type(self).__name__}({settings})"


class RandomCrop(_Op):
    """Pad by ``padding`` (``constant`` with ``fill``, or ``reflect``); crop at a random spot."""

    _shown = ("padding", "padding_mode")

    def __init__(self, padding: int, padding_mode: str = "constant", fill: Fill = 0.0) -> None:
        if padding < 0:
            raise ConfigError(f"batched RandomCrop padding={padding} must be 0 or more.")
        if padding_mode not in PADDING_MODES:
            raise ConfigError(
                f"batched RandomCrop padding_mode={padding_mode!r} is not supported.",
                fix=f"use one of {', '.join(PADDING_MODES)}",
            )
        self.padding, self.padding_mode = padding, padding_mode
        self.fill = _Fill(fill, "batched RandomCrop")

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        p, n, dev = self.padding, images.shape[0], images.device
        if p == 0:
            return images
        if self.padding_mode == "reflect" and p >= min(images.shape[-2:]):
            raise ValueError(f"reflect padding {p} needs images larger than {p} pixels")
        dy, dx = _uniform_ints(-p, p, n, g, dev), _uniform_ints(-p, p, n, g, dev)
        return shift_images(images, dy, dx, self.padding_mode, self.fill)

    moves_pixels = True  # an index_map: composes with other pixel moves (Compose)

    @property
    def fill_key(self) -> tuple | None:
        return tuple(self.fill.values) if self.padding_mode == "constant" else None

    def index_map(self, n: int, h: int, w: int, g: torch.Generator, dev) -> torch.Tensor:
        """The same draws as a call: each output pixel's source pixel, ``h * w`` = the fill."""
        p = self.padding
        if p == 0:
            return torch.arange(h * w, device=dev).expand(n, h * w)
        if self.padding_mode == "reflect" and p >= min(h, w):
            raise ValueError(f"reflect padding {p} needs images larger than {p} pixels")
        dy, dx = _uniform_ints(-p, p, n, g, dev), _uniform_ints(-p, p, n, g, dev)
        rows, row_ok = _source_index(h, dy, self.padding_mode)
        cols, col_ok = _source_index(w, dx, self.padding_mode)
        flat = (rows.view(n, h, 1) * w + cols.view(n, 1, w)).view(n, h * w)
        if row_ok is None:
            return flat
        inside = (row_ok.view(n, h, 1) & col_ok.view(n, 1, w)).view(n, h * w)
        return flat.masked_fill_(~inside, h * w)

    def per_image(self, size: int) -> PerImage:
        return PerImage(
            T.RandomCrop(size, self.padding, fill=self.fill.pil(), padding_mode=self.padding_mode)
        )


class Translate(RandomCrop):
    """Shift up to ``max_shift`` whole pixels along each axis; the uncovered edge gets ``fill``
    (a constant-padded crop, set as a shift)."""

    _shown = ("max_shift",)

    def __init__(self, max_shift: int, fill: Fill = 0.0) -> None:
        if max_shift < 0:
            raise ConfigError(f"batched Translate max_shift={max_shift} must be 0 or more.")
        self.max_shift = self.padding = max_shift
        self.padding_mode = "constant"
        self.fill = _Fill(fill, "batched Translate")

    def per_image(self, size: int) -> PerImage:
        # RandomAffine rounds a continuous shift (the extreme shifts half as likely): close
        # enough for a per-image baseline in the benchmark.
        shift = self.max_shift / size
        return PerImage(T.RandomAffine(0, translate=(shift, shift), fill=self.fill.pil()))


class HorizontalFlip(_Op):
    """Mirror left-right with probability ``p``, independently per image."""

    _shown = ("p",)

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched HorizontalFlip p={p} must be in [0, 1].")
        self.p = p

    fill_key, moves_pixels = None, True

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = torch.rand(images.shape[0], generator=g, device=images.device) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)

    def index_map(self, n: int, h: int, w: int, g: torch.Generator, dev) -> torch.Tensor:
        flip = torch.rand(n, generator=g, device=dev) < self.p
        cols = torch.arange(w, device=dev)
        cols = torch.where(flip.view(n, 1), w - 1 - cols, cols)  # (n, w)
        rows = torch.arange(h, device=dev).view(1, h, 1) * w
        return (rows + cols.view(n, 1, w)).view(n, h * w)

    def per_image(self, size: int) -> PerImage:
        return PerImage(T.RandomHorizontalFlip(self.p))


class Cutout(_Op):
    """With probability ``p``: ``holes`` squares of ``size`` pixels, wholly inside, get ``fill``."""

    _shown = ("size", "p", "holes")

    def __init__(self, size: int, p: float = 1.0, fill: Fill = 0.0, holes: int = 1) -> None:
        if size < 1:
            raise ConfigError(f"batched Cutout size={size} must be at least 1.")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched Cutout p={p} must be in [0, 1].")
        if holes < 1:
            raise ConfigError(f"batched Cutout holes={holes} must be at least 1.")
        self.size, self.p, self.holes = size, p, holes
        self.fill = _Fill(fill, "batched Cutout")

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        (n, _, h, w), dev = images.shape, images.device
        if self.size > min(h, w):
            raise ValueError(f"a {self.size}-pixel hole does not fit in {h}x{w} images")
        apply = torch.rand(n, generator=g, device=dev) < self.p
        hole = torch.zeros(n, h, w, dtype=torch.bool, device=dev)
        for _ in range(self.holes):  # a loop over holes, never over images
            top = _uniform_ints(0, h - self.size, n, g, dev)
            left = _uniform_ints(0, w - self.size, n, g, dev)
            hole |= in_box(top, left, self.size, self.size, (h, w))
        hole &= apply.view(n, 1, 1)
        return torch.where(hole.unsqueeze(1), self.fill.like(images), images)

    def per_image(self, size: int) -> PerImage:
        # RandomErasing (tensors only) with a fixed area and ratio 1 cuts one size x size
        # hole wholly inside; each of several holes gets its own p (here they share one).
        area = self.size**2 / size**2
        erase = T.RandomErasing(
            p=self.p, scale=(area, area), ratio=(1.0, 1.0), value=self.fill.values
        )
        return PerImage(T.Compose([erase] * self.holes), tensor_only=True)


class CoarseDropout(_Op):
    """albumentations' ``CoarseDropout`` per image, with probability ``p``: ``holes`` (a
    [min, max] count) rectangles of ``height`` × ``width`` pixels (each a [min, max] range,
    drawn per hole), wholly inside, filled with ``fill``."""

    _shown = ("holes", "height", "width", "p")

    def __init__(
        self,
        holes: Sequence[int] = (1, 1),
        height: Sequence[int] = (8, 8),
        width: Sequence[int] = (8, 8),
        fill: Fill = 0.0,
        p: float = 0.5,
    ) -> None:
        for what, (low, high) in (("holes", holes), ("height", height), ("width", width)):
            if not 1 <= low <= high:
                raise ConfigError(f"batched CoarseDropout {what}={list((low, high))} must be "
                                  "[min, max] with 1 <= min <= max.")  # fmt: skip
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched CoarseDropout p={p} must be in [0, 1].")
        self.holes, self.height, self.width = tuple(holes), tuple(height), tuple(width)
        self.p, self.fill = p, _Fill(fill, "batched CoarseDropout")

    def sample(self, n: int, g: torch.Generator, device, size: tuple[int, int]) -> dict:
        (h, w), most = size, self.holes[1]
        if self.height[1] > h or self.width[1] > w:
            raise ValueError(f"holes up to {self.height[1]}x{self.width[1]} do not fit {h}x{w}")
        hh = torch.randint(
            self.height[0], self.height[1] + 1, (n, most), generator=g, device=device
        )
        ww = torch.randint(self.width[0], self.width[1] + 1, (n, most), generator=g, device=device)
        top = (torch.rand(n, most, generator=g, device=device) * (h - hh + 1)).floor().long()
        left = (torch.rand(n, most, generator=g, device=device) * (w - ww + 1)).floor().long()
        count = _uniform_ints(self.holes[0], most, n, g, device)
        return {
            "apply": torch.rand(n, generator=g, device=device) < self.p,
            "count": count, "top": top, "left": left, "height": hh, "width": ww,
        }  # fmt: skip

    def cut(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        (n, _, h, w), dev = images.shape, images.device
        hole = torch.zeros(n, h, w, dtype=torch.bool, device=dev)
        for k in range(p["top"].shape[1]):  # a loop over holes, never over images
            box = (p[key][:, k] for key in ("top", "left", "height", "width"))
            hole |= in_box(*box, (h, w)) & (k < p["count"]).view(n, 1, 1)
        hole &= p["apply"].view(n, 1, 1)
        return torch.where(hole.unsqueeze(1), self.fill.like(images), images)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.cut(images, self.sample(images.shape[0], g, images.device, images.shape[-2:]))

    def per_image(self, size: int) -> PerImage:
        import albumentations as A

        from cifar_lightning.data.batched_affine import OnNumpy

        op = A.CoarseDropout(
            num_holes_range=self.holes, hole_height_range=self.height,
            hole_width_range=self.width, fill=self.fill.pil(), p=self.p,
        )  # fmt: skip
        return PerImage(OnNumpy(op))


class RandomErasing(_Op):
    """torchvision's ``RandomErasing`` per image, with probability ``p``: a rectangle of
    ``scale`` of the area (uniform) and aspect ``ratio`` (log-uniform), sides rounded; of 10
    such tries the first that fits inside is erased with ``fill`` at a uniform position, and an
    image none of whose tries fits is left as it is. Cutout and CoarseDropout draw pixel sizes
    instead, so neither stands for it."""

    _shown = ("p", "scale", "ratio")
    tries = 10

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        fill: Fill = 0.0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched RandomErasing p={p} must be in [0, 1].")
        low, high = (float(v) for v in scale)
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"batched RandomErasing scale={list(scale)} must be [min, max] "
                              "within [0, 1].")  # fmt: skip
        if not 0.0 < float(ratio[0]) <= float(ratio[1]):
            raise ConfigError(f"batched RandomErasing ratio={list(ratio)} must be [min, max] > 0.")
        self.p, self.scale, self.ratio = float(p), (low, high), tuple(float(r) for r in ratio)
        self.fill = _Fill(fill, "batched RandomErasing")

    def sample(self, n: int, g: torch.Generator, device, size: tuple[int, int]) -> dict:
        """Each image's rectangle: torchvision's tries, all drawn at once, the first that fits."""
        h, w = size
        low, high = self.scale
        area = h * w * (low + (high - low) * torch.rand(n, self.tries, generator=g, device=device))
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        u = torch.rand(n, self.tries, generator=g, device=device)
        aspect = torch.exp(log_low + (log_high - log_low) * u).double()
        area = area.double()
        heights = torch.sqrt(area * aspect).round().long()  # Python's round: half to even
        widths = torch.sqrt(area / aspect).round().long()
        fits = (heights < h) & (widths < w)
        first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
        height, width = heights.gather(1, first).view(n), widths.gather(1, first).view(n)
        top = (torch.rand(n, generator=g, device=device) * (h - height + 1)).floor().long()
        left = (torch.rand(n, generator=g, device=device) * (w - width + 1)).floor().long()
        apply = (torch.rand(n, generator=g, device=device) < self.p) & fits.any(1)
        return {"apply": apply, "top": top, "left": left, "height": height, "width": width}

    def erase(self, images: torch.Tensor, p: dict) -> torch.Tensor:
        n, h, w = images.shape[0], *images.shape[-2:]
        box = in_box(p["top"], p["left"], p["height"], p["width"], (h, w))
        inside = box & p["apply"].view(n, 1, 1)
        return torch.where(inside.unsqueeze(1), self.fill.like(images), images)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.p == 0.0:  # aug.erasing=0: off, and no draws
            return images
        return self.erase(images, self.sample(images.shape[0], g, images.device, images.shape[-2:]))

    def per_image(self, size: int) -> PerImage:
        erase = T.RandomErasing(self.p, self.scale, self.ratio, value=self.fill.values)
        return PerImage(erase, tensor_only=True)


class OneOf(_Op):
    """With probability ``p`` one of ``ops``, chosen per image with chances in proportion to
    ``weights`` (albumentations' ``OneOf``: its transforms' ``p``), applied for sure; every op
    runs on the whole batch and each image keeps its own op's result (no host sync)."""

    _shown = ("ops", "p")

    def __init__(self, ops: Sequence, p: float = 0.5, weights: Sequence[float] | None = None):
        if not ops:
            raise ConfigError("batched OneOf needs at least one op.")
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched OneOf p={p} must be in [0, 1].")
        self.ops, self.p = list(ops), p
        weights = [1.0] * len(ops) if weights is None else [float(w) for w in weights]
        if len(weights) != len(ops) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"batched OneOf weights={weights}: one per op, not all 0.")
        self.weights = [w / sum(weights) for w in weights]

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n, dev = images.shape[0], images.device
        apply = torch.rand(n, generator=g, device=dev) < self.p
        weights = torch.tensor(self.weights, device=dev)
        choice = torch.multinomial(weights.expand(n, -1), 1, generator=g).view(n)
        out = images
        for k, op in enumerate(self.ops):
            if hasattr(op, "apply_to"):  # draws for the whole batch, uses the chosen ones
                out = op.apply_to(out, apply & (choice == k), g)
                continue
            forced = _forced(op)
            out = on_chosen(out, apply & (choice == k), lambda x, _, f=forced: f(x, g), {})
        return out

    def per_image(self, size: int) -> PerImage:
        import albumentations as A

        from cifar_lightning.data.batched_affine import OnNumpy

        # Each inner op's counterpart is an albumentations op on numpy; OneOf weighs by p.
        transforms = [op.per_image(size).transform.transform for op in self.ops]
        for t, w in zip(transforms, self.weights, strict=True):
            t.p = w
        return PerImage(OnNumpy(A.OneOf(transforms, p=self.p)))


def _forced(op):
    """``op`` applied to every image whatever its own ``p`` (as OneOf calls its choice)."""
    if not hasattr(op, "p"):
        return op

    def always(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        saved, op.p = op.p, 1.0
        try:
            return op(images, g)
        finally:
            op.p = saved

    return always


class AlternatingFlip(_Op):
    """Half the images (drawn once from ``seed``) start mirrored; each flips every epoch, so
    any two consecutive epochs see both orientations, which random flips give only half the
    time: a little accuracy on short schedules (airbench; Jordan, arXiv 2404.00498). It needs
    image identities and the epoch, which only the device loader has."""

    uses_position = True

    def __init__(self) -> None:
        self._starts: dict[tuple, torch.Tensor] = {}

    def _start_mirrored(self, position: BatchPosition, device: torch.device) -> torch.Tensor:
        key = (position.seed, position.num_images, str(device))
        if key not in self._starts:
            g = torch.Generator().manual_seed(position.seed)
            self._starts[key] = (torch.rand(position.num_images, generator=g) < 0.5).to(device)
        return self._starts[key]

    def __call__(
        self, images: torch.Tensor, g: torch.Generator, position: BatchPosition
    ) -> torch.Tensor:
        start = self._start_mirrored(position, images.device)[position.indices]
        flip = start ^ bool(position.epoch % 2)
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)

    def per_image(self, size: int) -> PerImage:
        # No per-image form: a random flip has the same share of mirrored images per epoch.
        return PerImage(T.RandomHorizontalFlip(0.5))


def _index_run(ops: Sequence, start: int) -> list:
    """The ops from ``start`` on that only move whole pixels (``moves_pixels``: they have an
    ``index_map``), with one fill between them."""
    run, fill = [], None
    for op in ops[start:]:
        if not getattr(op, "moves_pixels", False):
            break
        key = op.fill_key
        if key is not None and fill is not None and key != fill:
            break
        fill = key if key is not None else fill
        run.append(op)
    return run


def _gather_through(images: torch.Tensor, run: list, g: torch.Generator) -> torch.Tensor:
    """Pixel-moving ops in a row as one gather: each op's map (drawn in the op's order, so
    the result is the ops' own, pixel for pixel) looked up through the ones before it."""
    n, c, h, w = images.shape
    dev, outside = images.device, h * w
    composed = None
    for op in run:
        step = op.index_map(n, h, w, g, dev)
        if composed is None:
            composed = step
        else:  # source of the source; a pixel read from outside stays outside
            padded = torch.cat((composed, composed.new_full((n, 1), outside)), dim=1)
            composed = padded.gather(1, step)
    fills = [op for op in run if op.fill_key is not None]
    fill = fills[0].fill.like(images) if fills else images.new_zeros(1, c, 1, 1)
    source = torch.cat((images.reshape(n, c, h * w), fill.view(1, c, 1).expand(n, c, 1)), dim=2)
    index = composed.view(n, 1, h * w).expand(n, c, h * w)
    return source.gather(2, index).view(n, c, h, w)


class Compose:
    """Run ``ops`` in order on a uint8 (N, C, H, W) batch; ``[]`` is no augmentation."""

    def __init__(self, ops: Sequence = ()) -> None:
        self.ops = list(ops)

    @property
    def uses_position(self) -> bool:
        return any(getattr(op, "uses_position", False) for op in self.ops)

    def __call__(
        self, images: torch.Tensor, g: torch.Generator, position: BatchPosition | None = None
    ) -> torch.Tensor:
        ops, i = self.ops, 0
        while i < len(ops):
            run = _index_run(ops, i)
            if len(run) > 1:  # e.g. crop, flip, rotation, shear: one gather, not four
                images = _gather_through(images, run, g)
                i += len(run)
                continue
            op = ops[i]
            if getattr(op, "uses_position", False):
                if position is None:
                    raise ValueError(f"{op!r} needs the batch's position (the device loader)")
                images = op(images, g, position)
            else:
                images = op(images, g)
            i += 1
        return images

    def per_image(self, size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
        """The same augmentation as the seed projects wrote it, one PIL image at a time
        (``ToTensor`` moved ahead of the first tensor-only op): the benchmark's baseline."""
        counterparts = [op.per_image(size) for op in self.ops]
        steps = [c.transform for c in counterparts]
        first_tensor_op = next((i for i, c in enumerate(counterparts) if c.tensor_only), len(steps))
        steps.insert(first_tensor_op, T.ToTensor())
        return T.Compose([*steps, T.Normalize(list(mean), list(std))])

    def __repr__(self) -> str:
        return f"Compose({self.ops})"


class Normalize:
    """uint8 → float32, then ``(x / 255 - mean) / std`` per channel: the end of every pipeline."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def to(self, device: torch.device) -> Normalize:
        """Keep the constants where the images are: no host-to-device copy per batch."""
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(images.device), self.std.to(images.device)
        # The arithmetic of v2.ToDtype(scale=True) + v2.Normalize: both loaders' floats agree.
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)
