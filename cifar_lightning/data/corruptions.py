"""The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich, ICLR 2019) at severities 1–5, made
on the fly from test images, or read from the published ``.npy`` files.

Written here, batched in torch, following the definitions and the per-severity constants of
the paper's CIFAR-10-C generator (``make_cifar_c.py``): the maintained package
(``imagecorruptions``) carries the ImageNet-C constants, which are far too strong for 32×32
images, and needs ImageMagick for the motion blurs. Where the generator calls a library, the
same operation is written out: scipy's Gaussian filter and order-1 zoom, OpenCV's
reflect-101 ``filter2D``/``warpAffine``, ImageMagick's one-sided motion-blur kernel, skimage's
salt-and-pepper and HSV value shift; PIL does pixelate and JPEG, as there. Random draws come
from a seeded ``torch.Generator``: the same distributions, not the paper's numpy stream.

One corruption departs from the paper: ``frost`` overlays crops of six frost photographs
that are not distributed with any package; a procedural ice-needle texture stands in (same
blend weights). ``corruptions.source=PATH`` evaluates on the real CIFAR-10-C files instead.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cifar_lightning.errors import DataError

FAMILIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
NAMES = tuple(name for names in FAMILIES.values() for name in names)  # CIFAR-10-C's order
SEVERITIES = (1, 2, 3, 4, 5)
CHUNK = 1000  # images corrupted at once: results do not depend on how many are asked for
Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]


# --- helpers: padding, separable filters, resampling ---------------------------------------


def pad_index(n: int, r: int, mode: str) -> torch.Tensor:
    """Source index of each of ``n + 2r`` padded positions: ``nearest`` (edge), ``reflect``
    (scipy's: d c b a | a b c d) or ``mirror`` (reflect-101, OpenCV's default: d c b | a b c d)."""
    i = torch.arange(-r, n + r)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    period = 2 * n if mode == "reflect" else max(2 * n - 2, 1)
    i = i.remainder(period)
    return torch.where(i < n, i, period - 1 - i if mode == "reflect" else period - i)


def separable(x: torch.Tensor, taps: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with ``taps`` along rows, then columns (odd length)."""
    r, c = len(taps) // 2, x.shape[1]
    x = x[:, :, pad_index(x.shape[2], r, mode)]
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    x = x[:, :, :, pad_index(x.shape[3], r, mode)]
    return F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def gaussian_blur(x: torch.Tensor, sigma: float, mode="nearest", truncate=4.0) -> torch.Tensor:
    """``scipy.ndimage.gaussian_filter`` over the two image axes (skimage's ``gaussian``)."""
    r = int(truncate * sigma + 0.5)
    if sigma <= 1e-15 or r == 0:
        return x
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return separable(x, taps / taps.sum(), mode)


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by ``factor`` and keep the image's size: scipy's order-1 ``zoom``
    (its grid maps corner to corner) of the central crop, trimmed to the centre."""
    h = x.shape[-1]
    crop = math.ceil(h / factor)
    top = (h - crop) // 2
    size = round(crop * factor)
    x = x[..., top : top + crop, top : top + crop]
    if size != crop:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=True)
    trim = (size - h) // 2
    return x[..., trim : trim + h, trim : trim + h]


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick's ``MotionBlurImage``: a one-sided Gaussian kernel of ``2⌈radius⌉+1`` taps
    whose i-th tap reads the pixel i steps along ``angle`` (degrees, one per image), offsets
    rounded to whole pixels, edge pixels repeated beyond the border."""
    n, c, h, w = x.shape
    i = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    taps = torch.exp(-(i**2) / (2 * sigma**2))
    taps = (taps / taps.sum()).to(x.dtype)
    a = torch.deg2rad(angle.double()).view(n, 1)
    dx = torch.ceil(i * torch.cos(a) - 0.5).long()  # (n, taps)
    dy = torch.ceil(i * torch.sin(a) - 0.5).long()
    rows = (torch.arange(h).view(1, 1, h) + dy.unsqueeze(2)).clamp(0, h - 1)
    cols = (torch.arange(w).view(1, 1, w) + dx.unsqueeze(2)).clamp(0, w - 1)
    flat, out = x.reshape(n, c, h * w), torch.zeros_like(x)
    for k in range(len(taps)):
        index = (rows[:, k, :, None] * w + cols[:, k, None, :]).view(n, 1, h * w)
        out += taps[k] * flat.gather(2, index.expand(n, c, h * w)).view(n, c, h, w)
    return out


def resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Bilinear samples of ``x`` at pixel coordinates (n, h, w). ``mirror``: OpenCV's
    reflect-101 border; ``reflect``: scipy's ``map_coordinates(mode='reflect')``."""
    h, w = x.shape[-2:]
    if mode == "mirror":  # reflection about the outer pixel centres
        grid = torch.stack((cols / (w - 1), rows / (h - 1)), dim=-1) * 2 - 1
        corners = True
    else:  # reflection about the outer pixel edges
        grid = torch.stack(((cols + 0.5) / w, (rows + 0.5) / h), dim=-1) * 2 - 1
        corners = False
    return F.grid_sample(x, grid.to(x.dtype), "bilinear", "reflection", align_corners=corners)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Through an 8-bit image and back, as the generator's PIL/PNG round trips are."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


# --- noise ------------------------------------------------------------------------------------


def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + c * torch.randn(x.shape, generator=g)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c = (500, 250, 100, 75, 50)[severity - 1]
    return torch.poisson(x * c, generator=g) / c


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Salt and pepper on a share ``c`` of the values, each channel drawn on its own."""
    c = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    hit = torch.rand(x.shape, generator=g) <= c
    salt = torch.rand(x.shape, generator=g) <= 0.5
    return torch.where(hit, salt.to(x.dtype), x)


# --- blur -------------------------------------------------------------------------------------


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """An aliased disk on a 17×17 grid, smoothed by a 3×3 Gaussian (reflect-101 border)."""
    reach, k = (8, 3) if radius <= 8 else (int(radius), 5)
    t = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = ((t.view(-1, 1) ** 2 + t.view(1, -1) ** 2) <= radius**2).double()
    disk /= disk.sum()
    s = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    taps = torch.exp(-(s**2) / (2 * alias_blur**2))
    kernel = separable(disk[None, None], taps / taps.sum(), "mirror")[0, 0]
    used = kernel.abs().sum(0) > 0  # symmetric: the same rows and columns are non-zero
    return kernel[used][:, used].float()


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    kernel, c = disk_kernel(radius, alias), x.shape[1]
    r = kernel.shape[0] // 2
    rows, cols = pad_index(x.shape[2], r, "mirror"), pad_index(x.shape[3], r, "mirror")
    padded = x[:, :, rows][:, :, :, cols]
    return F.conv2d(padded, kernel.expand(c, 1, -1, -1).to(x.dtype), groups=c)


def glass_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Blur, then swap each inner pixel with a random neighbour, sweeping bottom-right to
    top-left (sequential, as defined: later swaps move earlier ones), then blur again."""
    sigma, delta, sweeps = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[
        severity - 1
    ]
    n, c, h, w = x.shape
    x = torch.floor(gaussian_blur(x, sigma) * 255) / 255  # np.uint8 truncates
    flat = x.reshape(n, c, h * w).clone()
    places = [(r, q) for r in range(h - delta, delta, -1) for q in range(w - delta, delta, -1)]
    offsets = torch.randint(-delta, delta, (sweeps, len(places), n, 2), generator=g)
    for sweep in range(sweeps):
        for (row, col), d in zip(places, offsets[sweep], strict=True):
            here = row * w + col
            other = ((row + d[:, 1]) * w + col + d[:, 0]).view(n, 1, 1).expand(n, c, 1)
            pixel = flat[:, :, here : here + 1].clone()
            flat[:, :, here : here + 1] = flat.gather(2, other)
            flat.scatter_(2, other, pixel)
    return gaussian_blur(flat.view(n, c, h, w), sigma)


def zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    end = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    factors = np.arange(1, end, 0.01)  # numpy's count, as defined (1.06 gives 7 factors)
    out = sum(clipped_zoom(x, float(z)) for z in factors)
    return (x + out) / (len(factors) + 1)


def motion(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    angle = uniform((x.shape[0],), -45, 45, g)
    return quantize(motion_blur(x, radius, sigma, angle))


# --- weather ----------------------------------------------------------------------------------


def plasma_fractal(n: int, size: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """``n`` diamond-square height maps in [0, 1]; ``decay`` shrinks the noise per octave."""
    a = torch.zeros(n, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(t: torch.Tensor) -> torch.Tensor:
        return t / 4 + wibble * uniform(tuple(t.shape), -wibble, wibble, g)

    while step >= 2:
        half = step // 2
        corners = a[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        a[:, half::step, half::step] = wibbled(squares + squares.roll(-1, 2))
        centres, corners = a[:, half::step, half::step], a[:, 0::step, 0::step]
        across = centres + centres.roll(1, 1) + corners + corners.roll(-1, 2)
        a[:, 0::step, half::step] = wibbled(across)
        down = centres + centres.roll(1, 2) + corners + corners.roll(-1, 1)
        a[:, half::step, 0::step] = wibbled(down)
        step, wibble = half, wibble / decay
    a -= a.amin(dim=(1, 2), keepdim=True)
    return a / a.amax(dim=(1, 2), keepdim=True)


def fog(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    size = 1 << max(x.shape[-1] - 1, 1).bit_length()
    haze = plasma_fractal(x.shape[0], size, decay, g)[:, None, : x.shape[2], : x.shape[3]]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * haze.to(x.dtype)) * peak / (peak + c)


def snow(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    loc, scale, zoom, cut, radius, sigma, keep = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    n, _, h, w = x.shape
    flakes = clipped_zoom(loc + scale * torch.randn((n, 1, h, w), generator=g), zoom)
    flakes = torch.floor(torch.where(flakes < cut, 0, flakes).clamp(0, 1) * 255) / 255
    flakes = quantize(motion_blur(flakes, radius, sigma, uniform((n,), -135, -45, g)))
    gray = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = keep * x + (1 - keep) * torch.maximum(x, gray * 1.5 + 0.5)
    return x + flakes + flakes.flip(-2, -1)


def frost_textures(count: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Stand-ins for the paper's frost photographs: ice needles at random angles, lengths and
    brightness on a patchy haze, slightly blue; (count, 3, size, size) in [0, 1]."""
    needles = size * size // 6
    base = torch.rand((count, needles, 2), generator=g) * size
    angle = torch.rand((count, needles, 1), generator=g) * math.pi
    length = 2 + 10 * torch.rand((count, needles, 1), generator=g) ** 2
    light = 0.35 + 0.65 * torch.rand((count, needles, 1), generator=g)
    t = torch.linspace(0, 1, 24).view(1, 1, -1)
    xs = (base[..., :1] + t * length * torch.cos(angle)).long().clamp(0, size - 1)
    ys = (base[..., 1:] + t * length * torch.sin(angle)).long().clamp(0, size - 1)
    canvas = torch.zeros(count, size * size, dtype=torch.float64)
    values = light.expand_as(xs).reshape(count, -1).double()
    canvas.scatter_reduce_(1, (ys * size + xs).reshape(count, -1), values, "amax")
    ice = gaussian_blur(canvas.view(count, 1, size, size), 0.6)
    haze = plasma_fractal(count, size, 2.0, g)[:, None]
    ice = (ice / ice.amax(dim=(2, 3), keepdim=True)).clamp(0, 1) * (0.5 + 0.5 * haze)
    ice = (0.25 * haze + 0.85 * ice).clamp(0, 1)
    tint = torch.tensor([0.86, 0.93, 1.0], dtype=torch.float64).view(1, 3, 1, 1)
    return (ice * tint).float()


def frost(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    keep, add = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    n, _, h, w = x.shape
    bank = frost_textures(6, 4 * max(h, w), g)
    which = torch.randint(0, 5, (n,), generator=g)  # the generator draws from five of six
    top = torch.randint(0, bank.shape[2] - h, (n,), generator=g)
    left = torch.randint(0, bank.shape[3] - w, (n,), generator=g)
    rows = (top.view(n, 1) + torch.arange(h)).view(n, 1, h, 1)
    cols = (left.view(n, 1) + torch.arange(w)).view(n, 1, 1, w)
    crops = bank[which.view(n, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1), rows, cols]
    return keep * x + add * quantize(crops)


def brightness(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """HSV value + c, hue and saturation kept: every channel scales with the value."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    value = x.amax(dim=1, keepdim=True)
    lifted = (value + c).clamp(0, 1)
    return torch.where(value > 0, x * lifted / value.clamp(min=1e-12), lifted)


# --- digital ----------------------------------------------------------------------------------


def contrast(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


def elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A random affine map (three control points moved up to ``shift``; reflect-101 border),
    then a smooth random displacement field of strength ``alpha`` (scipy's reflect border)."""
    n, _, h, w = x.shape
    alpha, sigma, shift = (
        h * np.array(c)
        for c in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                  (0.1, 0.03, 0.03))[severity - 1]
    )  # fmt: skip
    centre, reach = float(h // 2), float(h // 3)
    src = torch.tensor(
        [[centre + reach, centre + reach], [centre + reach, centre - reach],
         [centre - reach, centre - reach]], dtype=torch.float64,
    )  # fmt: skip
    dst = src + uniform((n, 3, 2), -shift, shift, g)
    ones = torch.ones(3, 1, dtype=torch.float64)
    forward = torch.linalg.solve(torch.cat((src, ones), 1), dst).transpose(1, 2)  # (n, 2, 3)
    full = torch.cat((forward, torch.tensor([[[0.0, 0, 1]]]).double().expand(n, 1, 3)), 1)
    back = torch.linalg.inv(full)[:, :2]
    rows, cols = torch.meshgrid(torch.arange(h).double(), torch.arange(w).double(), indexing="ij")
    points = torch.stack((cols, rows, torch.ones_like(rows)), -1).view(1, h * w, 3)
    source = (points @ back.transpose(1, 2)).view(n, h, w, 2)
    x = resample(x, source[..., 1], source[..., 0], "mirror")
    field = uniform((n, 2, h, w), -1, 1, g)
    field = gaussian_blur(field, float(sigma), mode="reflect", truncate=3.0) * float(alpha)
    return resample(x, rows + field[:, 1], cols + field[:, 0], "reflect")


def pillow(x: torch.Tensor, change: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    pixels = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    out = np.stack([np.asarray(change(Image.fromarray(p))) for p in pixels])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    h, w = x.shape[-2:]
    small = (int(w * c), int(h * c))
    return pillow(x, lambda im: im.resize(small, Image.BOX).resize((w, h), Image.BOX))


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    quality = (80, 65, 58, 50, 40)[severity - 1]

    def jpeg(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(buffer).convert("RGB")

    return pillow(x, jpeg)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """``images`` (N, 3, H, W) uint8 under one corruption and severity, uint8 again (truncated,
    as the generator's ``np.uint8`` does). Seeded per (seed, corruption, severity), so a
    result does not depend on which other corruptions are asked for."""
    fn = CORRUPTIONS[name]
    g = torch.Generator().manual_seed(seed * 1_000_003 + NAMES.index(name) * 10 + severity)
    out = []
    for chunk in images.cpu().split(CHUNK):
        x = fn(chunk.float() / 255, severity, g)
        out.append(torch.floor(x.float().clamp(0, 1) * 255 + 1e-3).to(torch.uint8))
    return torch.cat(out)


# --- the published files ----------------------------------------------------------------------


PUBLISHED = "https://zenodo.org/records/2535967"
FIX = (
    f"point corruptions.source at the CIFAR-10-C folder (gaussian_noise.npy … labels.npy, from "
    f"{PUBLISHED}), or drop it to make the corruptions here"
)


def open_published(root: Path, names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """The files of ``names`` and ``labels.npy`` in ``root``, memory-mapped and checked:
    CIFAR-10-C's are (50000, 32, 32, 3) uint8, severities 1–5 in equal blocks."""
    arrays = {}
    for stem in ("labels", *names):
        path = root / f"{stem}.npy"
        if not path.is_file():
            problem = f"{path} does not exist (CIFAR-10-C has one .npy file per corruption)."
            raise DataError(problem, fix=FIX)
        try:
            arrays[stem] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise DataError(f"{path} is not a readable .npy file ({e}).", fix=FIX) from None
    labels = arrays["labels"]
    for name in names:
        data = arrays[name]
        if data.ndim != 4 or data.shape[1:] != (32, 32, 3) or data.dtype != np.uint8:
            raise DataError(
                f"{root / name}.npy holds {data.dtype} {tuple(data.shape)}; CIFAR-10-C files "
                "are uint8 (N, 32, 32, 3).",
                fix=FIX,
            )
        if len(data) % len(SEVERITIES) or len(labels) != len(data):
            raise DataError(
                f"{root / name}.npy has {len(data):,} images and labels.npy {len(labels):,}; "
                "they must match, five severities in equal blocks.",
                fix=FIX,
            )
    return arrays


def load_published(
    arrays: dict[str, np.ndarray], name: str, severity: int, images: int
) -> tuple[np.ndarray, ...]:
    """The first ``images`` pictures of one severity of ``name``, and their labels, from the
    files :func:`open_published` opened (memory-mapped: only these pictures are read)."""
    block = len(arrays[name]) // len(SEVERITIES)
    start = (severity - 1) * block
    take = slice(start, start + min(images, block))
    return np.array(arrays[name][take]), arrays["labels"][take].astype(np.int64)
