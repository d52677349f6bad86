"""``data.loader=device``: the dataset lives on the training device; batches are cut from it.

CIFAR-10 is 180 MB as uint8: copied to the device once, then indexed, augmented
(data/batched_aug.py) and normalized a whole batch at a time, the per-image Python work and
the host-to-device copy leave every step — what limits a net this small. A training epoch is
a seeded shuffle (DistributedSampler's ``seed + epoch``); under DDP each rank gets its shard
and up to ``world_size - 1`` images sit the epoch out, so ranks step alike; on one device
every image comes once, the last batch smaller unless ``drop_last``. Augmentation draws come
from a device generator seeded by (seed, epoch, rank, batch), so a run resumed mid-epoch
(the loader's ``state_dict``) continues with exactly the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from cifar_lightning.data.batched_aug import BatchPosition, Compose, Normalize
from cifar_lightning.data.datasets import ArrayDataset


class EpochSampler(DistributedSampler):
    """:class:`~torch.utils.data.DistributedSampler` over ``n`` items, also as one tensor.

    Lightning calls ``set_epoch`` on a loader's ``sampler`` at every epoch start, for this
    loader as for a DataLoader. :meth:`indices` is the parent's ``__iter__`` (same seed, same
    order, same shard) computed with tensor ops: turning 50,000 indices into a Python list
    and back every epoch would be wasted time. A test keeps the two identical.
    """

    def __init__(
        self,
        n: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            range(n),  # only its length is used
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.n = n

    def indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        if self.drop_last:
            order = order[: self.total_size]
        elif self.total_size > self.n:  # pad by repeating from the start, as the parent does
            order = order.repeat(math.ceil(self.total_size / self.n))[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas]


class DeviceLoader:
    """Batches of ``(images, labels)`` cut from uint8 images already on the device.

    ``images`` is (N, 3, H, W) uint8 and ``labels`` (N,) int64, both on the training device;
    ``subset`` picks the images this loader serves (a train or validation split of them), so
    the train and validation loaders can share one copy of the training set.
    """

    # Lightning looks for ``sampler`` (to call ``set_epoch``) and then ``batch_sampler`` on
    # any loader it is given, as on a DataLoader; this one batches by itself.
    batch_sampler = None

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        subset: torch.Tensor | None,
        batch_size: int,
        sampler: EpochSampler,
        normalize: Normalize,
        augment: Compose | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        n = len(labels) if subset is None else len(subset)
        if sampler.n != n:
            raise ValueError(f"the sampler covers {sampler.n} items, the loader {n}")
        self.images = images
        self.labels = labels
        self.subset = subset.to(images.device) if subset is not None else None
        self.batch_size = batch_size
        self.sampler = sampler
        self.normalize = normalize.to(images.device)
        self.augment = augment
        self.seed = seed
        self.drop_last = drop_last
        self._batches = 0  # handed out this epoch
        self._resume: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        per_rank = len(self.sampler)
        if self.drop_last:
            return per_rank // self.batch_size
        return math.ceil(per_rank / self.batch_size)

    def epoch_indices(self) -> torch.Tensor:
        """This epoch's images for this rank, in order, as indices into ``images``."""
        order = self.sampler.indices().to(self.device)
        return order if self.subset is None else self.subset[order]

    def _generator(self, batch: int) -> torch.Generator:
        """The augmentation's random stream for one batch, on the device.

        Seeded from (seed, epoch, rank, batch): a run resumed mid-epoch draws exactly what the
        uninterrupted run drew for the batches that remain.
        """
        key = [self.seed, self.sampler.epoch, self.sampler.rank, batch]
        seed = np.random.SeedSequence(key).generate_state(1)[0]
        return torch.Generator(self.device).manual_seed(int(seed))

    def state_dict(self) -> dict[str, int]:
        """Where the epoch stands: Lightning saves it in every checkpoint (see resumable.py)."""
        return {"epoch": self.sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: this runs at the first next(), after Lightning's set_epoch.
        start = 0
        if self._resume is not None and self._resume[0] == self.sampler.epoch:
            start = self._resume[1]  # skip the batches trained on before the checkpoint
        self._resume = None
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
            if array.ndim == 4:  # (N, H, W, C) images → (N, C, H, W), contiguous for the gathers
                tensor = torch.from_numpy(array).to(device).permute(0, 3, 1, 2).contiguous()
            else:
                tensor = torch.from_numpy(array).to(device)
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

    ``drop_last`` (training only): leave out the last partial batch of each epoch, as the
    classic loader does and airbench does, instead of serving it smaller.
    """
    images = resident.get(dataset.images, device)
    labels = resident.get(dataset.labels, device)
    subset = torch.from_numpy(np.asarray(dataset.indices, dtype=np.int64))
    sampler = EpochSampler(
        len(subset),
        num_replicas=world_size,
        rank=rank,
        shuffle=train,
        seed=seed,
        # Training: an even split across ranks (every rank the same number of steps).
        # Evaluation: every image, padded like Lightning pads the classic loaders.
        drop_last=train,
    )
    return DeviceLoader(
        images,
        labels,
        subset,
        batch_size=batch_size,
        sampler=sampler,
        normalize=Normalize(mean, std),
        augment=augment if train else None,
        seed=seed,
        drop_last=train and drop_last,
    )
