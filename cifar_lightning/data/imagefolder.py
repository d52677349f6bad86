"""An image-folder copy of CIFAR-10 (a directory, or a ``.tar.gz`` of one), decoded once.

Layout: ``train/<class>/*`` and ``test/<class>/*`` (optionally under one top folder). Decoding
60,000 JPEGs takes ~12 s on a core, so the arrays are cached as ``.npz`` keyed by a
fingerprint of the source, reused only while the source is unchanged and rebuilt if corrupt.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifar_lightning.atomic import atomic_write
from cifar_lightning.data.sources import IMAGE_SHAPE, ImageArrays, Splits
from cifar_lightning.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
CACHE_FORMAT = 2  # bump when the cache layout changes, so old caches are ignored (2: test shuffled)
TEST_ORDER_SEED = 0
LAYOUT_FIX = (
    "point data.root at a folder with train/<class>/ and test/<class>/ image files, or at a "
    ".tar.gz of that layout (e.g. data.root=path/to/cifar10-jpeg.tar.gz)"
)

# (split, class, file name) -> bytes of one image, in archive or directory order.
Entry = tuple[str, str, str, bytes]


def is_archive(root: Path) -> bool:
    return root.is_file() and any(root.name.endswith(s) for s in (".tar.gz", ".tgz", ".tar"))


def fingerprint(root: Path) -> str:
    """Content hash of an archive (~50 ms for 19 MB); (path, size, mtime) hash of a directory,
    since hashing 60,000 image files would cost more than decoding them."""
    h = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    if root.is_file():
        with root.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        for split in SPLITS:
            for dirpath, dirnames, filenames in os.walk(root / split):
                dirnames.sort()
                for name in sorted(filenames):
                    path = os.path.join(dirpath, name)
                    st, rel = os.stat(path), os.path.relpath(path, root)
                    h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                h.update(f"dir:{os.path.relpath(dirpath, root)}\n".encode())
    return h.hexdigest()[:16]


def _classify(parts: Sequence[str]) -> tuple[str, str, str] | None:
    """(split, class, name) for ``[top/]split/class/name``; None for anything else."""
    if len(parts) < 3 or parts[-3] not in SPLITS:
        return None
    name = parts[-1]
    if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return parts[-3], parts[-2], name


def _archive_entries(root: Path, class_dirs: dict[str, set[str]]) -> Iterator[Entry]:
    try:
        with tarfile.open(root, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if member.isdir() and len(parts) >= 2 and parts[-2] in SPLITS:
                    class_dirs[parts[-2]].add(parts[-1])
                    continue
                if member.isfile() and (key := _classify(parts)) is not None:
                    class_dirs[key[0]].add(key[1])
                    yield (*key, tar.extractfile(member).read())  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{root} is truncated or not a readable tar archive ({e}).",
            fix="copy the archive again (compare its sha256 with the source's), or extract it "
            "and point data.root at the folder",
        ) from None


def _directory_entries(root: Path, class_dirs: dict[str, set[str]]) -> Iterator[Entry]:
    for split in (s for s in SPLITS if (root / s).is_dir()):
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            class_dirs[split].add(class_dir.name)
            for path in sorted(class_dir.iterdir()):
                key = _classify((split, class_dir.name, path.name))
                if key is not None and path.is_file():
                    yield (*key, path.read_bytes())


def _decode(split: str, cls: str, name: str, payload: bytes, root: Path) -> np.ndarray:
    where = f"{root}: {split}/{cls}/{name}"
    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # PIL names the in-memory buffer (``<_io.BytesIO object at 0x…>``), not the file.
        why = "not an image format PIL knows" if isinstance(e, UnidentifiedImageError) else e
        raise DataError(
            f"{where} is not a readable image ({why}).",
            fix="delete or replace that file, then run again",
        ) from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape != IMAGE_SHAPE:
        h, w = array.shape[:2]
        raise DataError(
            f"{where} is {w}x{h}; CIFAR-10 images are 32x32.",
            fix="resize the folder's images to 32x32 first (this source does not resize)",
        )
    return array


def _check_classes(root: Path, class_dirs: dict[str, set[str]], classes: Sequence[str]) -> None:
    for split in SPLITS:
        if not class_dirs[split]:
            raise DataError(f"{root} has no {split}/<class>/ folders with images.", LAYOUT_FIX)
    train, test = class_dirs["train"], class_dirs["test"]
    if train != test:
        raise DataError(
            f"{root}: train/ and test/ have different classes "
            f"(only in train: {sorted(train - test)}; only in test: {sorted(test - train)}).",
            fix="give both splits the same class folders",
        )
    if sorted(train) != sorted(classes):
        raise DataError(
            f"{root} has classes {sorted(train)}, the config expects {list(classes)}.",
            fix="set data.classes to the folder's class names in label order, e.g. "
            f"data.classes=[{','.join(sorted(train))}]",
        )


def _split_arrays(
    root: Path, split: str, items: list[tuple[str, str, np.ndarray]], classes: Sequence[str]
) -> ImageArrays:
    """One split's images in (class, file name) order, so that archive order, file-system
    order and cache never change the result."""
    index = {c: i for i, c in enumerate(classes)}
    present = {cls for cls, _, _ in items}
    empty = [c for c in classes if c not in present]
    if empty:
        raise DataError(
            f"{root}: {split}/{empty[0]}/ holds no images.",
            fix="put the images back or remove that class from both splits and from data.classes",
        )
    items = sorted(items, key=lambda t: (index[t[0]], t[1]))
    images = np.stack([a for _, _, a in items])
    labels = np.array([index[c] for c, _, _ in items], dtype=np.int64)
    if split == "test":
        # A fixed shuffle, as the official test batch has: any prefix (limit_test_batches, or
        # limit_val_batches with val_size=0) then holds every class; train is shuffled anyway.
        order = np.random.default_rng(TEST_ORDER_SEED).permutation(len(labels))
        images, labels = images[order], labels[order]
    return ImageArrays(images=images, labels=labels)


def decode(root: Path, classes: Sequence[str]) -> Splits:
    """Read every image of ``root`` into arrays; label order is ``classes`` order."""
    class_dirs: dict[str, set[str]] = {s: set() for s in SPLITS}
    entries = (_archive_entries if is_archive(root) else _directory_entries)(root, class_dirs)
    decoded: dict[str, list[tuple[str, str, np.ndarray]]] = {s: [] for s in SPLITS}
    for split, cls, name, payload in entries:
        decoded[split].append((cls, name, _decode(split, cls, name, payload, root)))
    _check_classes(root, class_dirs, classes)
    train, test = (_split_arrays(root, split, decoded[split], classes) for split in SPLITS)
    return Splits(train=train, test=test, classes=tuple(classes))


def _save_cache(splits: Splits, path: Path) -> None:
    arrays = {"classes": np.array(splits.classes)}
    for split in SPLITS:
        part = getattr(splits, split)
        arrays |= {f"{split}_images": part.images, f"{split}_labels": part.labels}
    # Atomic: a crash mid-write never leaves a half cache that looks valid.
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _load_cache(path: Path, classes: Sequence[str]) -> Splits | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            train, test = (ImageArrays(z[f"{s}_images"], z[f"{s}_labels"]) for s in SPLITS)
            splits = Splits(train, test, classes=tuple(str(c) for c in z["classes"]))
    except Exception as e:  # any unreadable cache is rebuilt, never trusted
        log.warning("Ignoring unreadable decode cache %s (%s); rebuilding it.", path, e)
        return None
    return splits if splits.classes == tuple(classes) else None


def cache_path(root: Path, cache_dir: Path) -> Path:
    """``imagefolder-<which source>-<which content>.npz``: one live cache per source."""
    source = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"imagefolder-{source}-{fingerprint(root)}.npz"


def _remove_stale(cache: Path) -> None:
    """Drop caches of earlier contents of the same source: they can never be used again."""
    source_prefix = cache.name.rsplit("-", 1)[0]
    for old in cache.parent.glob(f"{source_prefix}-*.npz"):
        if old != cache:
            old.unlink(missing_ok=True)


def load_imagefolder(root: str | Path, classes: Sequence[str], cache_dir: str | Path) -> Splits:
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"data.root={root} does not exist.", LAYOUT_FIX)
    if root.is_file() and not is_archive(root):
        raise DataError(
            f"data.root={root} is a file but not a .tar.gz/.tgz/.tar archive.", LAYOUT_FIX
        )
    cache = cache_path(root, Path(cache_dir).expanduser())
    if cache.exists() and (splits := _load_cache(cache, classes)) is not None:
        return splits
    log.info("Decoding %s once into %s …", root, cache)
    splits = decode(root, classes)
    _save_cache(splits, cache)
    _remove_stale(cache)
    log.info("Decoded %d train and %d test images.", len(splits.train), len(splits.test))
    return splits
