"""CIFAR-10 as a LightningDataModule: one of three sources, a seeded train/val split, loaders."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from cifar_lightning.data.batched_aug import Compose
from cifar_lightning.data.classic_loader import (
    ResumableTrainLoader,
    ignore_interrupts,
    resumable_loader,
)
from cifar_lightning.data.datasets import ArrayDataset
from cifar_lightning.data.device_loader import DeviceLoader, ResidentArrays, make_device_loader
from cifar_lightning.data.imagefolder import load_imagefolder
from cifar_lightning.data.sources import (
    CIFAR10_CLASSES,
    Splits,
    load_torchvision_cifar10,
    make_fake,
)
from cifar_lightning.data.transforms import eval_transform, train_transform
from cifar_lightning.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def default_num_workers() -> int:
    """One loader worker per CPU the process may use (capped at 8; more rarely helps)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return min(cpus, 8)


def check_split(train_size: int, val_size: int, batch_size: int) -> None:
    """The split must leave training images, and at least one full batch of them.

    Also called before any data is loaded (validation.py) where the size is known up front.
    """
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
    """CIFAR-10 from ``source`` (cifar10 | imagefolder | fake).

    ``prepare_data`` only downloads or decodes (once, on one process); ``setup`` loads the
    arrays and splits the training set with ``split_seed``, so the validation images are the
    same in every run with that seed whatever the training seed. The validation part gets the
    evaluation transform — never training augmentation. ``val_size=0`` validates on the test
    set (as the seed projects did).

    ``loader="classic"`` serves batches from a DataLoader running the per-image ``aug`` in
    workers; ``loader="device"`` keeps the arrays on the training device and augments whole
    batches there with ``batched_aug`` (see :mod:`cifar_lightning.data.device_loader`). Both
    draw their shuffles and augmentations from ``shuffle_seed``, the epoch and the position,
    and both can resume mid-epoch exactly (their position is saved with the DataModule).
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
        aug: Callable[[torch.Tensor], torch.Tensor] | None = None,
        loader: str = "classic",
        batched_aug: Compose | None = None,
        shuffle_seed: int = 0,
        drop_last: bool | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.root = root
        self.classes = tuple(classes)
        self.val_size = val_size
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.pin_memory = pin_memory
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.download = download
        self.cache_dir = cache_dir
        self.fake_sizes = (fake_train_size, fake_test_size)
        self.aug = aug
        self.loader = loader
        self.batched_aug = batched_aug
        # Training order and augmentation are drawn from (shuffle_seed, epoch, position) —
        # data/resumable.py, data/device_loader.py — so a run resumed mid-epoch sees the
        # same batches.
        self.shuffle_seed = shuffle_seed
        # Training's last partial batch: null keeps each loader's default (classic: dropped,
        # device: kept, so that every image is seen each epoch).
        self.drop_last = drop_last
        self._resident = ResidentArrays()
        self._splits: Splits | None = None
        self.train_set: ArrayDataset | None = None
        self.val_set: ArrayDataset | None = None
        self.test_set: ArrayDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def load(self) -> Splits:
        """The whole dataset as uint8 arrays (downloads or decodes on first use).

        Kept after the first call: prepare_data and setup may both ask, and reading the
        180 MB of arrays twice would be waste.
        """
        if self._splits is None:
            if self.source == "cifar10":
                self._splits = load_torchvision_cifar10(self.root or "data", self.download)
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
        train_tf = train_transform(self.aug, self.mean, self.std)
        eval_tf = eval_transform(self.mean, self.std)
        train, test = data.train, data.test
        self.train_set = ArrayDataset(train.images, train.labels, train_tf, train_idx)
        self.test_set = ArrayDataset(test.images, test.labels, eval_tf)
        self.val_set = (
            ArrayDataset(train.images, train.labels, eval_tf, val_idx)
            if self.val_size > 0
            else self.test_set
        )

    def sample_train_images(self, n: int) -> torch.Tensor:
        """The first ``n`` images of the training split, normalized, as (n, 3, 32, 32) float.

        For data-dependent initialisation (e.g. a whitening layer): no augmentation.
        """
        if self.train_set is None:
            self.setup("fit")
        indices = self.train_set.indices[:n]
        images = torch.from_numpy(self.train_set.images[indices]).permute(0, 3, 1, 2)
        return eval_transform(self.mean, self.std)(images)

    def _pin(self) -> bool:
        if self.pin_memory is not None:
            return self.pin_memory
        # Pinned host memory only helps copies to a GPU; on CPU it is wasted RAM.
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: ArrayDataset | None, train: bool) -> DataLoader | DeviceLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        if self.loader == "device":
            return self._device_loader(dataset, train)
        workers = {
            "num_workers": self.num_workers,
            "pin_memory": self._pin(),
            "persistent_workers": self.num_workers > 0,
            "worker_init_fn": ignore_interrupts if self.num_workers > 0 else None,
        }
        if train:
            return resumable_loader(
                dataset,
                batch_size=self.batch_size,
                seed=self.shuffle_seed,
                # a ragged last batch would skew BatchNorm statistics
                drop_last=self.drop_last is None or self.drop_last,
                **workers,
            )
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, **workers)

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
        # track(): the loader's position is saved with the DataModule, for exact resume.
        return self.track(self._loader(self.train_set, train=True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def describe(self) -> str:
        where = {"cifar10": f"torchvision CIFAR-10 in {self.root}/", "fake": "synthetic data"}
        source = where.get(self.source, f"image folder {Path(str(self.root))}")
        return f"{source}, {self.loader} loader"
