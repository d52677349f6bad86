"""A training loader that can stop anywhere and carry on exactly where it stopped.

Lightning 2.x restores a run's weights, optimizer and loop counters from a checkpoint, but a
plain ``DataLoader`` starts every epoch afresh: a run resumed mid-epoch would see a new
shuffle, repeat some images, skip others and draw different augmentations. Here everything
random about an epoch is a function of ``(seed, epoch, position)`` alone:

- :class:`EpochSampler` shuffles with a permutation drawn from ``(seed, epoch)`` and gives
  every position its own augmentation seed; it can start an epoch at any position.
- :class:`SeededSamples` runs the dataset's transform under that per-sample seed, so the
  augmentation of an image does not depend on which worker drew it, how many workers there
  are, or what ran before.
- :class:`ResumableDataLoader` counts the batches it has handed out and implements the
  ``state_dict`` / ``load_state_dict`` pair that Lightning's fit loop saves in every
  checkpoint (and restores before iterating again), so a resumed epoch skips exactly the
  batches that were trained on — without loading them.

A loader that does not go through ``torch.utils.data.DataLoader`` (e.g. a device-resident
one) reuses :class:`EpochSampler` for its order and seeds and keeps the same two-number state.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from non-negative integer keys, e.g. ``(run seed, epoch, batch)``.

    NumPy's SeedSequence mixes the keys, so neighbouring keys give unrelated streams (unlike
    ``seed + epoch``), and the result is the same on every platform and Python version.
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, augmentation seed)`` pairs in an order fixed by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch. :meth:`resume_at` makes the next
    iteration start ``start`` samples into an epoch; it applies once.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a resume position belongs to the epoch it was saved in
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's sample indices and their augmentation seeds, position by position."""
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        if self.shuffle:
            indices = torch.randperm(self.size, generator=generator)
        else:
            indices = torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)
        return indices, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # A generator: the order is computed at the first next(), i.e. after Lightning's
        # set_epoch for this epoch, even though the loader's iterator was created earlier.
        start, self.start = self.start, 0
        indices, seeds = self.order(self.epoch)
        yield from zip(indices[start:].tolist(), seeds[start:].tolist(), strict=True)

    def __len__(self) -> int:
        return self.size


class SeededSamples(Dataset):
    """``dataset[index]`` under the torch RNG seed the sampler chose for this position.

    Every torchvision transform draws from torch's default generator, so seeding it here makes
    the augmentation a pure function of the sample's position in the epoch. In the main
    process (``num_workers=0``) the generator's previous state is put back afterwards, so the
    model's own randomness (dropout) is not disturbed. A plain integer key (a sampler Lightning
    swapped in, e.g. for ``overfit_batches``) reads the dataset unseeded.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        if get_worker_info() is not None:  # a worker's RNG serves nothing else
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
        state = torch.get_rng_state()
        torch.default_generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(state)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose position Lightning can checkpoint.

    The state is ``{"epoch", "batches"}``: batches handed to the training loop in that epoch.
    Lightning's fit loop does not prefetch from loaders that have a length, so at any
    checkpoint this equals the batches trained on. Worker-side prefetching does not count:
    only batches that left the loader do.
    """

    _batches = 0

    def _epoch_sampler(self) -> EpochSampler | None:
        return self.sampler if isinstance(self.sampler, EpochSampler) else None

    def state_dict(self) -> dict[str, int]:
        sampler = self._epoch_sampler()
        if sampler is None:
            return {}
        return {"epoch": sampler.epoch, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        sampler = self._epoch_sampler()
        if sampler is None or not state_dict:
            return
        batches = int(state_dict["batches"])
        sampler.resume_at(int(state_dict["epoch"]), batches * int(self.batch_size or 1))
        self._batches = batches

    def __iter__(self) -> Iterator[Any]:
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        # Deferred to the first next(), like EpochSampler.__iter__: workers start prefetching
        # as soon as the real iterator exists, and by then set_epoch must have happened.
        sampler = self._epoch_sampler()
        self._batches = sampler.start // int(self.batch_size or 1) if sampler else 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch


class ResumableTrainLoader:
    """DataModule mixin: the training loader's position is part of the DataModule's state.

    Lightning saves a DataModule's ``state_dict`` in every checkpoint and restores it before
    it first asks for ``train_dataloader()`` — also when ``configure_optimizers`` asks for
    ``trainer.estimated_stepping_batches`` (one-cycle schedules), which builds the training
    loader before the fit loop's own state is restored, so that Lightning 2.6 never hands the
    loader the position it saved for it. ``train_dataloader`` passes its loader through
    :meth:`track`.
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
        return {"train_loader": loader.state_dict()} if loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_position = state_dict.get("train_loader") or None


def ignore_interrupts(worker_id: int) -> None:
    """Loader workers leave SIGINT/SIGTERM to the main process.

    Ctrl-C in a terminal signals the whole process group. A worker that received it would
    exit, and the main process — which is finishing the step to save a checkpoint — would then
    fail on its next batch. Workers still end with the main process (torch watches for that).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def resumable_loader(
    dataset: Dataset, *, batch_size: int, seed: int, drop_last: bool = True, **loader_kwargs: Any
) -> ResumableDataLoader:
    """The training loader: seeded shuffle and augmentation, resumable anywhere; full batches
    only unless ``drop_last`` is false (a ragged last batch skews BatchNorm statistics)."""
    return ResumableDataLoader(
        SeededSamples(dataset),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed),  # type: ignore[arg-type]
        drop_last=drop_last,
        **loader_kwargs,
    )
