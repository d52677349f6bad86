"""``data.loader=device``: the dataset lives on the training device; batches are cut from it.

CIFAR-10 (180 MB as uint8) is copied to the device once, then indexed, augmented and
normalized a batch at a time: no per-image Python work or host-to-device copy limits a net
this small. Augmentation draws are seeded by (seed, epoch, rank, batch), so a run resumed
mid-epoch (the loader's ``state_dict``) continues with exactly the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from cifar_lightning.data.batched_aug import BatchPosition, Compose, Normalize

if TYPE_CHECKING:
    from cifar_lightning.data.datamodule import ArrayDataset


class ShardSampler(DistributedSampler):
    """This rank's shard of an epoch's shuffle of ``n`` items (Lightning calls ``set_epoch``).
    Under DDP up to ``world_size - 1`` images sit a training epoch out, so ranks step alike.
    :meth:`indices` is the parent's ``__iter__`` (same seed, order and shard) in tensor ops,
    sparing a 50,000-item Python list per epoch; a test keeps the two identical."""

    def __init__(
        self,
        n: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(range(n), num_replicas, rank, shuffle, seed, drop_last)
        self.n = n

    def indices(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > self.n:  # pad by repeating from the start, as the parent does
            order = order.repeat(math.ceil(self.total_size / self.n))[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]


class DeviceLoader:
    """Batches of ``(images, labels)`` cut from (N, 3, H, W) uint8 images on the device, each
    image once per epoch (on one device), the last batch smaller unless ``drop_last``.
    ``subset`` picks a train or validation split, so both can share one copy of the images."""

    # Lightning reads ``sampler`` (for set_epoch) and ``batch_sampler`` as on a DataLoader.
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        subset: torch.Tensor | None,
        batch_size: int,
        sampler: ShardSampler,
        normalize: Normalize,
        augment: Compose | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        n = len(labels) if subset is None else len(subset)
        if sampler.n != n:
            raise ValueError(f"the sampler covers {sampler.n} items, the loader {n}")
        self.images, self.labels, self.sampler = images, labels, sampler
        self.subset = subset.to(images.device) if subset is not None else None
        self.normalize = normalize.to(images.device)
        self.batch_size, self.augment = batch_size, augment
        self.seed, self.drop_last = seed, drop_last
        self._batches = 0  # handed out this epoch
        self._resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        per_rank, size = len(self.sampler), self.batch_size
        return per_rank // size if self.drop_last else math.ceil(per_rank / size)

    def epoch_indices(self) -> torch.Tensor:
        """This epoch's images for this rank, in order, as indices into ``images``."""
        order = self.sampler.indices().to(self.device)
        return order if self.subset is None else self.subset[order]

    def _generator(self, batch: int) -> torch.Generator:
        key = [self.seed, self.sampler.epoch, self.sampler.rank, batch]
        seed = np.random.SeedSequence(key).generate_state(1)[0]
        return torch.Generator(self.device).manual_seed(int(seed))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: this runs at the first next(), after Lightning's set_epoch.
        resume, self._resume = self._resume, None
        # Skip the batches trained on before the checkpoint, if it was saved in this epoch.
        start = resume[1] if resume is not None and resume[0] == self.sampler.epoch else 0
        self._batches = start
        order = self.epoch_indices()
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images[idx]
            if self.augment is not None:
                position = BatchPosition(idx, self.sampler.epoch, self.seed, len(self.images))
                images = self.augment(images, self._generator(b), position)
            self._batches += 1
            yield self.normalize(images), self.labels[idx]


class ResidentArrays:
    """The uint8 arrays copied to the device once, then shared by every loader that needs them."""

    def __init__(self) -> None:
        self._copies: dict[tuple[int, str], tuple[torch.Tensor, np.ndarray]] = {}

    def get(self, array: np.ndarray, device: torch.device) -> torch.Tensor:
        key = (id(array), str(device))
        if key not in self._copies:
            tensor = torch.from_numpy(array).to(device)
            if array.ndim == 4:  # (N, H, W, C) images → (N, C, H, W), contiguous for the gathers
                tensor = tensor.permute(0, 3, 1, 2).contiguous()
            # Holding the array keeps its id from being reused by another array.
            self._copies[key] = (tensor, array)
        return self._copies[key][0]


def make_device_loader(
    dataset: ArrayDataset,
    resident: ResidentArrays,
    device: torch.device,
    batch_size: int,
    train: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: Compose | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> DeviceLoader:
    """A device loader over the same images, labels and split as a classic ``ArrayDataset``.
    Training shards evenly (every rank the same number of steps) and, with ``drop_last``,
    leaves out each epoch's last partial batch as the classic loader and airbench do;
    evaluation serves every image, padded as Lightning pads the classic loaders."""
    subset = torch.from_numpy(np.asarray(dataset.indices, dtype=np.int64))
    sampler = ShardSampler(len(subset), world_size, rank, train, seed, drop_last=train)
    return DeviceLoader(
        resident.get(dataset.images, device),
        resident.get(dataset.labels, device),
        subset,
        batch_size=batch_size,
        sampler=sampler,
        normalize=Normalize(mean, std),
        augment=augment if train else None,
        seed=seed,
        drop_last=train and drop_last,
    )
