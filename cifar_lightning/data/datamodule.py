"""CIFAR-10 as a LightningDataModule: one of three sources, a seeded train/val split, loaders.

Augmentations (``conf/aug/``) work on uint8 images so their fill values and colour ops mean
the same in every recipe; normalization, from ``data.mean``/``data.std``, always comes last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cifar_lightning.data.batched_aug import Compose
from cifar_lightning.data.classic_loader import (
    ResumableTrainLoader,
    ignore_interrupts,
    resumable_loader,
)
from cifar_lightning.data.device_loader import DeviceLoader, ResidentArrays, make_device_loader
from cifar_lightning.data.imagefolder import load_imagefolder
from cifar_lightning.data.sources import (
    CIFAR10_CLASSES,
    Splits,
    load_torchvision_cifar,
    make_fake,
)
from cifar_lightning.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

Transform = Callable[[torch.Tensor], torch.Tensor]


def normalize(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def train_transform(
    aug: Transform | None, mean: Sequence[float], std: Sequence[float]
) -> v2.Transform:
    return v2.Compose([*([aug] if aug is not None else []), normalize(mean, std)])


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Transform:
    """Validation and test never see augmentation: only the normalization."""
    return normalize(mean, std)


log = logging.getLogger(__name__)


class ArrayDataset(Dataset):
    """``(transform(image), label)`` over in-memory arrays, the image a (3, 32, 32) uint8 tensor
    rather than a PIL image: v2 ops run faster on tensors, and every pipeline gets one type."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Transform, indices=None
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        image = torch.from_numpy(self.images[j]).permute(2, 0, 1)
        return self.transform(image), int(self.labels[j])


def default_num_workers() -> int:
    """One loader worker per CPU the process may use (capped at 8; more rarely helps)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return min(cpus, 8)


def check_split(train_size: int, val_size: int, batch_size: int) -> None:
    """The split must leave at least one full batch of training images (run/checks.py also
    asks before any data is loaded, where the size is known up front)."""
    if val_size >= train_size:
        raise ConfigError(
            f"data.val_size={val_size} leaves no training images "
            f"(the training set has {train_size}).",
            fix=f"use a data.val_size below {train_size} (0 validates on the test set)",
        )
    if train_size - val_size < batch_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is larger than the training split "
            f"({train_size - val_size} images), so an epoch would have no full batch.",
            fix="lower data.batch_size or data.val_size",
        )


class CIFAR10DataModule(ResumableTrainLoader, L.LightningDataModule):
    """CIFAR-10 (or CIFAR-100) from ``source`` (cifar10 | cifar100 | imagefolder | fake).

    ``setup`` splits with ``split_seed``, so the validation images depend on that seed alone,
    never on the training seed, and get the evaluation transform; ``val_size=0`` validates on
    the test set (as the seed projects did). ``loader="classic"`` runs the per-image ``aug``
    in DataLoader workers; ``loader="device"`` keeps the arrays on the training device and
    runs ``batched_aug`` on whole batches. Both draw shuffles and augmentations from
    (``shuffle_seed``, epoch, position) and save their position with the DataModule, so a run
    resumed mid-epoch sees the same batches. ``drop_last=None`` keeps each loader's default
    for the last partial training batch (classic: dropped; device: kept, every image seen).
    """

    def __init__(
        self,
        source: str = "cifar10",
        root: str | None = "data",
        classes: Sequence[str] = CIFAR10_CLASSES,
        val_size: int = 5000,
        split_seed: int = 0,
        batch_size: int = 128,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        download: bool = True,
        cache_dir: str = "data/cache",
        fake_train_size: int = 2000,
        fake_test_size: int = 500,
        aug: Transform | None = None,
        loader: str = "auto",
        batched_aug: Compose | None = None,
        shuffle_seed: int = 0,
        drop_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.source, self.root, self.classes = source, root, tuple(classes)
        self.val_size, self.split_seed, self.batch_size = val_size, split_seed, batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.pin_memory, self.download, self.cache_dir = pin_memory, download, cache_dir
        self.mean, self.std = tuple(mean), tuple(std)
        self.fake_sizes = (fake_train_size, fake_test_size)
        self.aug, self.loader, self.batched_aug = aug, loader, batched_aug
        self.shuffle_seed, self.drop_last = shuffle_seed, drop_last
        self._resident = ResidentArrays()
        self._splits: Splits | None = None
        self.train_set: ArrayDataset | None = None
        self.val_set: ArrayDataset | None = None
        self.test_set: ArrayDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self) -> Splits:
        """The whole dataset as uint8 arrays, kept after the first call: prepare_data and
        setup may both ask, and reading the 180 MB twice would be waste."""
        if self._splits is None:
            if self.source in ("cifar10", "cifar100"):
                root = self.root or "data"
                self._splits = load_torchvision_cifar(self.source, root, self.download)
            elif self.source == "imagefolder":
                self._splits = load_imagefolder(self.root, self.classes, self.cache_dir)
            else:
                self._splits = make_fake(*self.fake_sizes, self.classes, seed=self.split_seed)
        return self._splits

    def prepare_data(self) -> None:
        if self.source != "fake":
            self.load()

    def setup(self, stage: str | None = None) -> None:
        if self.test_set is not None:
            return
        data = self.load()
        if data.classes != self.classes:
            raise ConfigError(
                f"the data's classes {list(data.classes)} differ from data.classes "
                f"{list(self.classes)}.",
                fix="set data.classes to the data's class names in label order",
            )
        n = len(data.train)
        if stage != "test":  # testing uses none of the training split
            check_split(n, self.val_size, self.batch_size)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = perm[: self.val_size].numpy(), perm[self.val_size :].numpy()
        train, eval_tf = data.train, eval_transform(self.mean, self.std)
        train_tf = train_transform(self.aug, self.mean, self.std)
        self.train_set = ArrayDataset(train.images, train.labels, train_tf, train_idx)
        self.test_set = ArrayDataset(data.test.images, data.test.labels, eval_tf)
        val_set = ArrayDataset(train.images, train.labels, eval_tf, val_idx)
        self.val_set = val_set if self.val_size > 0 else self.test_set

    def sample_train_images(self, n: int) -> torch.Tensor:
        """The first ``n`` training-split images, normalized, unaugmented, (n, 3, 32, 32):
        for data-dependent initialisation such as a whitening layer."""
        if self.train_set is None:
            self.setup("fit")
        indices = self.train_set.indices[:n]
        images = torch.from_numpy(self.train_set.images[indices]).permute(0, 3, 1, 2)
        return eval_transform(self.mean, self.std)(images)

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        # Pinned host memory only helps copies to a GPU; on CPU it is wasted RAM.
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: ArrayDataset | None, train: bool) -> DataLoader | DeviceLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        if self.resolved_loader == "device":
            return self._device_loader(dataset, train)
        common = {
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self._pin(),
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": ignore_interrupts if self.num_workers > 0 else None,
        }
        if not train:
            return DataLoader(dataset, shuffle=False, **common)
        drop_last = self.drop_last is None or self.drop_last  # ragged batches skew BatchNorm
        return resumable_loader(dataset, seed=self.shuffle_seed, drop_last=drop_last, **common)

    @property
    def resolved_loader(self) -> str:
        """``loader``, with ``auto`` decided: the device loader when training on a GPU with an
        augmentation that has a batched form (or none at all), else the classic one."""
        if self.loader != "auto":
            return self.loader
        trainer = self.trainer
        on_gpu = trainer is not None and trainer.strategy.root_device.type == "cuda"
        choice = (
            "device" if on_gpu and (self.aug is None or self.batched_aug is not None) else "classic"
        )
        if getattr(self, "_told", None) != choice:
            self._told = choice
            why = (
                "a GPU and a batched augmentation"
                if choice == "device"
                else ("no GPU" if not on_gpu else "the aug has no batched form")
            )
            log.info("data.loader=auto: the %s loader (%s)", choice, why)
        return choice

    def _device_loader(self, dataset: ArrayDataset, train: bool) -> DeviceLoader:
        if train and self.aug is not None and self.batched_aug is None:
            raise ConfigError(
                "data.loader=device needs the augmentation as batched ops (the aug's "
                "`batched:` node), and none was given.",
                fix="use data.loader=classic, or an aug= option that has a `batched:` node",
            )
        trainer = self.trainer
        return make_device_loader(
            dataset,
            self._resident,
            device=trainer.strategy.root_device if trainer else torch.device("cpu"),
            batch_size=self.batch_size,
            train=train,
            mean=self.mean,
            std=self.std,
            augment=self.batched_aug,
            seed=self.shuffle_seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            drop_last=bool(self.drop_last),
        )

    def train_dataloader(self) -> DataLoader:
        return self.track(self._loader(self.train_set, train=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def describe(self) -> str:
        where = {
            "cifar10": f"torchvision CIFAR-10 in {self.root}/",
            "cifar100": f"torchvision CIFAR-100 in {self.root}/",
            "fake": "synthetic data",
        }
        source = where.get(self.source, f"image folder {Path(str(self.root))}")
        return f"{source}, {self.resolved_loader} loader"
