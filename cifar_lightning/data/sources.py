"""Where the images come from: torchvision's CIFAR-10 download, an image folder, or fakes.

Every source ends as uint8 arrays in memory (180 MB for CIFAR-10, cheaper than decoding files
every epoch), so split, augmentation and loaders never care which one it was.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_lightning.errors import DataError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class ImageArrays:
    """``images`` is (N, 32, 32, 3) uint8 (HWC, as CIFAR-10 ships); ``labels`` is (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(
                f"images must be (N, 32, 32, 3) uint8, got {self.images.shape} {self.images.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Splits:
    train: ImageArrays
    test: ImageArrays
    classes: tuple[str, ...]


def load_torchvision_cifar10(root: str | Path, download: bool = True) -> Splits:
    """The official CIFAR-10 python archive, md5-checked by torchvision, stored under ``root``."""
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    if download and not _extracted_intact(root):
        _check_archive(root)
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=False)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise DataError(
            f"could not download CIFAR-10 into {root}/ ({getattr(e, 'reason', e)}).",
            fix="with no network, point at a local copy instead: "
            "data=imagefolder data.root=PATH (a folder with train/<class>/ and "
            "test/<class>/ images, or a .tar.gz of that layout such as "
            "cifar10-jpeg.tar.gz); or put cifar-10-python.tar.gz, "
            f"downloaded elsewhere, into {root}/ and run again.",
        ) from None
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted" / md5 mismatch
        _check_archive(root)  # a bad download gets its own message
        raise DataError(
            f"CIFAR-10 under {root}/ is missing or fails its md5 check ({e}).",
            fix=f"delete {root}/cifar-10-batches-py and {root}/cifar-10-python.tar.gz and run "
            "again with network access (data.download=true), or use data=imagefolder.",
        ) from None
    return Splits(
        train=ImageArrays(np.asarray(train.data), np.asarray(train.targets, dtype=np.int64)),
        test=ImageArrays(np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)),
        classes=tuple(train.classes),
    )


def _md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def _extracted_intact(root: Path) -> bool:
    """Whether the extracted batches are all there and pass torchvision's md5 list."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    return folder.is_dir() and all(
        _md5_ok(folder / name, md5) for name, md5 in (*CIFAR10.train_list, *CIFAR10.test_list)
    )


def _check_archive(root: Path) -> None:
    """A cifar-10-python.tar.gz already in ``root`` (planted, or a broken download) must be
    the real one: torchvision would try to download over it and, offline, report only that."""
    from torchvision.datasets import CIFAR10

    archive = root / CIFAR10.filename
    if archive.is_file() and not _md5_ok(archive, CIFAR10.tgz_md5):
        raise DataError(
            f"{archive} fails its md5 check (expected {CIFAR10.tgz_md5}): the file is "
            "incomplete or corrupt.",
            fix=f"delete {archive} and run again with network access, or download "
            f"cifar-10-python.tar.gz elsewhere, check that its md5 is {CIFAR10.tgz_md5}, and "
            f"put it in {root}/",
        )


def make_fake(train_size: int, test_size: int, classes: Sequence[str], seed: int = 0) -> Splits:
    """Synthetic CIFAR-shaped data a net can learn, for tests, demos and sweep plumbing: each
    class is a smooth random colour pattern plus heavy noise, so accuracy climbs above chance
    within a few dozen steps."""
    rng, k = np.random.default_rng(seed), len(classes)
    coarse = rng.uniform(40, 215, size=(k, 4, 4, 3))
    prototypes = coarse.repeat(8, axis=1).repeat(8, axis=2)  # (k, 32, 32, 3)

    def draw(n: int) -> ImageArrays:
        labels = rng.permutation(np.arange(n) % k).astype(np.int64)
        noise = rng.normal(0.0, 45.0, size=(n, *IMAGE_SHAPE))
        images = np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8)
        return ImageArrays(images, labels)

    return Splits(train=draw(train_size), test=draw(test_size), classes=tuple(classes))
