"""Where the images come from: torchvision's CIFAR-10 or CIFAR-100 download, an image folder,
or fakes.

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
# CIFAR-100's 20 superclasses ("coarse labels") and their five classes each, as the dataset
# defines them: what a 100-class confusion matrix is summed into to stay readable.
CIFAR100_SUPERCLASSES = {
    "aquatic mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit and vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household electrical devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large man-made outdoor things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large natural outdoor scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large omnivores and herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles 1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles 2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
CIFAR100_CLASSES = tuple(sorted(c for group in CIFAR100_SUPERCLASSES.values() for c in group))
IMAGE_SHAPE = (32, 32, 3)


def superclasses(class_names: Sequence[str]) -> dict[str, tuple[str, ...]] | None:
    """The superclass grouping of these classes, where one is known (CIFAR-100's)."""
    return CIFAR100_SUPERCLASSES if set(class_names) == set(CIFAR100_CLASSES) else None


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


def _dataset(name: str) -> type:
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]


TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# An image folder in place of the download; data=cifar100 keeps its 100 class names.
LOCAL_COPY = {"cifar10": "data=imagefolder", "cifar100": "data=cifar100 data.source=imagefolder"}


def load_torchvision_cifar(name: str, root: str | Path, download: bool = True) -> Splits:
    """The official CIFAR-10 or CIFAR-100 (fine labels) python archive, md5-checked by
    torchvision, stored under ``root``."""
    dataset, title = _dataset(name), TITLES[name]
    root = Path(root).expanduser()
    if download and not _extracted_intact(dataset, root):
        _check_archive(dataset, root)
    try:
        train = dataset(str(root), train=True, download=download)
        test = dataset(str(root), train=False, download=False)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise DataError(
            f"could not download {title} into {root}/ ({getattr(e, 'reason', e)}).",
            fix="with no network, point at a local copy instead: "
            f"{LOCAL_COPY[name]} data.root=PATH (a folder with train/<class>/ and "
            "test/<class>/ images, or a .tar.gz of that layout such as "
            f"cifar10-jpeg.tar.gz); or put {dataset.filename}, downloaded elsewhere, into "
            f"{root}/ and run again.",
        ) from None
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted" / md5 mismatch
        _check_archive(dataset, root)  # a bad download gets its own message
        raise DataError(
            f"{title} under {root}/ is missing or fails its md5 check ({e}).",
            fix=f"delete {root}/{dataset.base_folder} and {root}/{dataset.filename} and run "
            f"again with network access (data.download=true), or use {LOCAL_COPY[name]}.",
        ) from None
    return Splits(
        train=ImageArrays(np.asarray(train.data), np.asarray(train.targets, dtype=np.int64)),
        test=ImageArrays(np.asarray(test.data), np.asarray(test.targets, dtype=np.int64)),
        classes=tuple(train.classes),
    )


def _md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def _extracted_intact(dataset: type, root: Path) -> bool:
    """Whether the extracted batches are all there and pass torchvision's md5 list."""
    folder = root / dataset.base_folder
    return folder.is_dir() and all(
        _md5_ok(folder / name, md5) for name, md5 in (*dataset.train_list, *dataset.test_list)
    )


def _check_archive(dataset: type, root: Path) -> None:
    """An archive already in ``root`` (planted, or a broken download) must be the real one:
    torchvision would try to download over it and, offline, report only that."""
    archive = root / dataset.filename
    if archive.is_file() and not _md5_ok(archive, dataset.tgz_md5):
        raise DataError(
            f"{archive} fails its md5 check (expected {dataset.tgz_md5}): the file is "
            "incomplete or corrupt.",
            fix=f"delete {archive} and run again with network access, or download "
            f"{dataset.filename} elsewhere, check that its md5 is {dataset.tgz_md5}, and "
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
