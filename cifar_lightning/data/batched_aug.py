"""Augmentation of whole batches, each image with its own random draw, in tensor ops only.

The per-image pipeline (an aug's ``pipeline:``) runs one image at a time in Python on the
CPU, which sets the pace for nets this small. These ops take a (N, C, H, W) uint8 batch on
any device and draw every image's parameters at once: a handful of kernel launches per batch.
An aug's ``batched:`` node builds them; each matches its per-image counterpart (``per_image``)
in distribution. Fills are fractions of full intensity per channel, like ``data.mean``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torchvision import transforms as T

from cifar_lightning.errors import ConfigError

Fill = float | Sequence[float]
PADDING_MODES = ("constant", "reflect")


@dataclass(frozen=True)
class BatchPosition:
    """Where a batch sits in the run: which images (indices into the resident set of
    ``num_images``), which epoch, which seed. Ops that set ``uses_position`` get it; the
    others are stateless draws from the generator."""

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
    """A fill value (0..1, one or one per channel) as a (1, C, 1, 1) tensor in image units.

    Built once per device and dtype: making it per batch would copy host to device every
    batch, and on a GPU such a copy waits for all queued work.
    """

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

    def pil(self, channels: int = 3) -> tuple[int, ...]:
        """The fill as PIL wants it: one 0..255 integer per channel."""
        values = self.values * channels if len(self.values) == 1 else self.values
        return tuple(round(v * 255) for v in values)

    def like(self, images: torch.Tensor) -> torch.Tensor:
        channels = images.shape[1]
        key = (images.device, images.dtype, channels)
        if key not in self._cache:
            values = self.values * channels if len(self.values) == 1 else self.values
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
    """Where each output row (or column) of each image reads from, after a per-image shift.

    Output pixel ``i`` of image ``n`` shows input pixel ``i + shift[n]``. Reading past an edge
    either reflects (mirror without repeating the edge pixel, like ``F.pad(mode="reflect")``)
    or is marked invalid, to be filled. Returns the (N, size) indices and, for ``constant``,
    the (N, size) mask of valid reads.
    """
    src = torch.arange(size, device=shift.device).unsqueeze(0) + shift.unsqueeze(1)
    if padding_mode == "reflect":
        last = size - 1
        return last - (last - src.abs()).abs(), None
    valid = (src >= 0) & (src < size)
    return src.clamp(0, size - 1), valid


def shift_images(
    images: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    padding_mode: str = "constant",
    fill: _Fill | None = None,
) -> torch.Tensor:
    """Shift image ``n`` by (``dy[n]``, ``dx[n]``) pixels in one gather, with no padded copy.

    Cropping a padded image at offset ``o`` is this with shift ``o - padding``. Index
    arithmetic instead of padding keeps one code path for reflect and constant borders and
    works on uint8 on every device (``F.pad``'s reflect mode takes no uint8 on CPU). For a
    constant border each image gets one extra pixel holding the fill value, and reads from
    outside the image point at it, so one gather does the shift and the fill.
    """
    n, c, h, w = images.shape
    rows, row_ok = _source_index(h, dy, padding_mode)
    cols, col_ok = _source_index(w, dx, padding_mode)
    flat = rows.view(n, h, 1) * w + cols.view(n, 1, w)  # (n, h, w) source pixel per output pixel
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


class RandomCrop:
    """Pad by ``padding`` (``constant`` with ``fill``, or ``reflect``); crop at a random spot."""

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
        p, n = self.padding, images.shape[0]
        if p == 0:
            return images
        if self.padding_mode == "reflect" and p >= min(images.shape[-2:]):
            raise ValueError(f"reflect padding {p} needs images larger than {p} pixels")
        dy = _uniform_ints(-p, p, n, g, images.device)
        dx = _uniform_ints(-p, p, n, g, images.device)
        return shift_images(images, dy, dx, self.padding_mode, self.fill)

    def per_image(self, size: int) -> PerImage:
        return PerImage(
            T.RandomCrop(size, self.padding, fill=self.fill.pil(), padding_mode=self.padding_mode)
        )

    def __repr__(self) -> str:
        return f"RandomCrop(padding={self.padding}, padding_mode={self.padding_mode!r})"


class Translate:
    """Shift up to ``max_shift`` whole pixels along each axis; the uncovered edge gets ``fill``."""

    def __init__(self, max_shift: int, fill: Fill = 0.0) -> None:
        if max_shift < 0:
            raise ConfigError(f"batched Translate max_shift={max_shift} must be 0 or more.")
        self.max_shift = max_shift
        self.fill = _Fill(fill, "batched Translate")

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        s, n = self.max_shift, images.shape[0]
        if s == 0:
            return images
        dy = _uniform_ints(-s, s, n, g, images.device)
        dx = _uniform_ints(-s, s, n, g, images.device)
        return shift_images(images, dy, dx, "constant", self.fill)

    def per_image(self, size: int) -> PerImage:
        # RandomAffine rounds a continuous shift: the same range, the two extreme shifts
        # half as likely. Close enough for its use, a per-image baseline for the benchmark.
        shift = self.max_shift / size
        return PerImage(T.RandomAffine(0, translate=(shift, shift), fill=self.fill.pil()))

    def __repr__(self) -> str:
        return f"Translate(max_shift={self.max_shift})"


class HorizontalFlip:
    """Mirror left-right with probability ``p``, independently per image."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"batched HorizontalFlip p={p} must be in [0, 1].")
        self.p = p

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        flip = torch.rand(images.shape[0], generator=g, device=images.device) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)

    def per_image(self, size: int) -> PerImage:
        return PerImage(T.RandomHorizontalFlip(self.p))

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class Cutout:
    """With probability ``p``: ``holes`` squares of ``size`` pixels, wholly inside, get ``fill``."""

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
        n, _, h, w = images.shape
        if self.size > min(h, w):
            raise ValueError(f"a {self.size}-pixel hole does not fit in {h}x{w} images")
        dev = images.device
        apply = torch.rand(n, generator=g, device=dev) < self.p
        rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
        hole = torch.zeros(n, h, w, dtype=torch.bool, device=dev)
        for _ in range(self.holes):  # a loop over holes, never over images
            top = _uniform_ints(0, h - self.size, n, g, dev).view(n, 1)
            left = _uniform_ints(0, w - self.size, n, g, dev).view(n, 1)
            in_rows = (rows >= top) & (rows < top + self.size)  # (n, h)
            in_cols = (cols >= left) & (cols < left + self.size)  # (n, w)
            hole |= in_rows.view(n, h, 1) & in_cols.view(n, 1, w)
        hole &= apply.view(n, 1, 1)
        return torch.where(hole.unsqueeze(1), self.fill.like(images), images)

    def per_image(self, size: int) -> PerImage:
        # RandomErasing with a fixed area and aspect ratio 1 cuts one size x size hole wholly
        # inside the image. It works on tensors only. With several holes, each is drawn with
        # probability p on its own (here all holes of an image share one draw).
        area = self.size**2 / size**2
        erase = T.RandomErasing(
            p=self.p, scale=(area, area), ratio=(1.0, 1.0), value=self.fill.values
        )
        return PerImage(T.Compose([erase] * self.holes), tensor_only=True)

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, p={self.p}, holes={self.holes})"


class AlternatingFlip:
    """Half the images start mirrored; every image flips on every other epoch (airbench).

    Random flips (p=0.5) show an image the same way two epochs running half the time; here
    each image alternates, so any two consecutive epochs see both orientations — more
    diversity for the same epochs, worth a little accuracy on short schedules (Jordan,
    arXiv 2404.00498, "alternating flip"). Which half starts mirrored is drawn once per run
    from ``seed``. It needs the images' identities and the epoch, which only the device
    loader has, so it has no per-image form in the classic loader.
    """

    uses_position = True

    def __init__(self) -> None:
        self._starts: dict[tuple, torch.Tensor] = {}

    def _start_mirrored(self, position: BatchPosition, device: torch.device) -> torch.Tensor:
        key = (position.seed, position.num_images, str(device))
        if key not in self._starts:
            g = torch.Generator().manual_seed(position.seed)
            bits = torch.rand(position.num_images, generator=g) < 0.5
            self._starts[key] = bits.to(device)
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

    def __repr__(self) -> str:
        return "AlternatingFlip()"


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
        for op in self.ops:
            if getattr(op, "uses_position", False):
                if position is None:
                    raise ValueError(f"{op!r} needs the batch's position (the device loader)")
                images = op(images, g, position)
            else:
                images = op(images, g)
        return images

    def per_image(self, size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
        """The same augmentation the way the seed projects wrote it, for PIL images.

        torchvision's classic transforms, one image at a time, then ``ToTensor`` (moved ahead
        of the first op that needs a tensor) and ``Normalize``: the baseline the benchmark
        (``python -m cifar_lightning.bench``) measures the batched ops against.
        """
        steps: list = []
        as_tensor = False
        for op in self.ops:
            counterpart = op.per_image(size)
            if counterpart.tensor_only and not as_tensor:
                steps.append(T.ToTensor())
                as_tensor = True
            steps.append(counterpart.transform)
        if not as_tensor:
            steps.append(T.ToTensor())
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
        # Same arithmetic, in the same order, as v2.ToDtype(scale=True) + v2.Normalize, so both
        # loaders give the same floats for the same image.
        return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)
