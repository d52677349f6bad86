"""The classic training loader, resumable anywhere: an epoch's shuffle and augmentation are a
function of ``(seed, epoch, position)``, whatever worker reads an image, and the loader's
``state_dict`` (which Lightning checkpoints) counts the batches handed out. A plain
``DataLoader`` would resume mid-epoch with a new shuffle and new augmentations.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys: SeedSequence gives neighbouring keys unrelated
    streams, the same on every platform."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` pairs in an order fixed by ``(seed, epoch)``;
    :meth:`resume_at` makes the next epoch start ``start`` samples in (once)."""

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a resume position belongs to the epoch it was saved in
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's sample indices and their augmentation seeds, position by position."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        indices = (
            torch.randperm(self.size, generator=g) if self.shuffle else torch.arange(self.size)
        )
        return indices, torch.randint(0, 2**62, (self.size,), generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # A generator: the order is computed at the first next(), after Lightning's set_epoch.
        start, self.start = self.start, 0
        indices, seeds = self.order(self.epoch)
        yield from zip(indices[start:].tolist(), seeds[start:].tolist(), strict=True)

    def __len__(self) -> int:
        return self.size


class SeededSamples(Dataset):
    """``dataset[index]`` under the torch seed the sampler chose for this position, the main
    process's RNG state restored afterwards (dropout must not notice). A plain integer key
    (from a sampler Lightning swapped in) reads unseeded."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        in_worker = get_worker_info() is not None  # a worker's RNG serves nothing else
        state = None if in_worker else torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            if state is not None:
                torch.set_rng_state(state)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose ``{"epoch", "batches"}`` position
    Lightning checkpoints: it does not prefetch from loaders with a length, so the batches
    that left the loader are those trained on."""

    _batches = 0

    def _epoch_sampler(self) -> EpochSampler | None:
        return self.sampler if isinstance(self.sampler, EpochSampler) else None

    def state_dict(self) -> dict[str, int]:
        sampler = self._epoch_sampler()
        return {} if sampler is None else {"epoch": sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if (sampler := self._epoch_sampler()) is None or not state_dict:
            return
        self._batches = int(state_dict["batches"])
        sampler.resume_at(int(state_dict["epoch"]), self._batches * int(self.batch_size or 1))

    def __iter__(self) -> Iterator[Any]:
        # A generator, like EpochSampler.__iter__: workers prefetch as soon as the real
        # iterator exists, and by then set_epoch must have happened.
        sampler = self._epoch_sampler()
        self._batches = sampler.start // int(self.batch_size or 1) if sampler else 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch


class ResumableTrainLoader:
    """DataModule mixin: the training loader's position is part of the DataModule's state.
    Lightning 2.6 restores a DataModule's state before its first ``train_dataloader()`` but
    never hands the fit loop's saved position to a loader that ``estimated_stepping_batches``
    (one-cycle) built first, so ``train_dataloader`` passes its loader through :meth:`track`.
    """

    _train_loader: Any = None
    _train_position: dict[str, int] | None = None

    def track(self, loader: Any) -> Any:
        """Give ``loader`` the restored position (once), and remember it for the next save."""
        if self._train_position:
            loader.load_state_dict(self._train_position)
            self._train_position = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        loader = self._train_loader
        return {} if loader is None else {"train_loader": loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_position = state_dict.get("train_loader") or None


def ignore_interrupts(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process: Ctrl-C signals the whole
    process group, and a worker that exited would fail the step being finished to save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def resumable_loader(
    dataset: Dataset, *, batch_size: int, seed: int, drop_last: bool = True, **loader_kwargs: Any
) -> ResumableDataLoader:
    return ResumableDataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed),  # type: ignore[arg-type]
        drop_last=drop_last,
        **loader_kwargs,
    )
