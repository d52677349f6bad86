"""``timing.enabled=true``: time a run the way airbench reports its record times.

airbench times (CUDA events) the data-dependent init, the epochs and the final TTA test, after
an untimed warm-up (:func:`warm_up`) that compiled kernels and tuned cuDNN; :class:`RunClock`
takes the segments. ``cold_start_s`` is the run's wall time from a cold start."""

from __future__ import annotations

import copy
import itertools
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from cifar_lightning.run.config import build
from cifar_lightning.run.trainer import SIDE_RUN, make_trainer
from cifar_lightning.run.tune import rng_preserved
from cifar_lightning.training.callbacks import RunClock

log = logging.getLogger(__name__)


def warm_up(cfg: DictConfig, model: L.LightningModule, datamodule: Any) -> float | None:
    """Untimed ``timing.warmup_steps`` + a validation and a test pass, meeting every batch shape
    the timed run will (each compiles its own graph, records its own CUDA graph and tunes its
    own cuDNN kernels); model and RNG restored for the timed run."""
    steps = cfg.timing.warmup_steps if cfg.timing.enabled else 0
    if not steps:
        return None
    state, started = copy.deepcopy(model.state_dict()), time.perf_counter()
    with rng_preserved():
        data = WarmupData(datamodule, steps)
        trainer = make_trainer(
            cfg.trainer,
            [build(cfg.speed, "speed")],
            **{**SIDE_RUN, "max_epochs": 1},
            max_steps=steps + 1,  # the epoch's last, smaller batch, where there is one
            enable_progress_bar=False,
        )
        trainer.fit(model, datamodule=data)
        trainer.test(model, datamodule=data, verbose=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.load_state_dict(state)
    log.info("Warm-up (%d steps, untimed): %.2f s", steps, seconds)
    return round(seconds, 3)


class WarmupData(L.LightningDataModule):
    """The run's data cut to the warm-up: ``steps`` training batches, one validation and one
    test batch, each loader followed by a batch of its last, smaller size where it has one."""

    def __init__(self, datamodule: Any, steps: int) -> None:
        super().__init__()
        self.datamodule, self.steps = datamodule, steps

    def _loader(self, name: str, batches: int) -> BatchShapes:
        self.datamodule.trainer = self.trainer  # made on the warm-up Trainer's device
        return BatchShapes(getattr(self.datamodule, name)(), batches)

    def train_dataloader(self) -> BatchShapes:
        return self._loader("train_dataloader", self.steps)

    def val_dataloader(self) -> BatchShapes:
        return self._loader("val_dataloader", 1)

    def test_dataloader(self) -> BatchShapes:
        return self._loader("test_dataloader", 1)

    def sample_train_images(self, n: int) -> torch.Tensor:
        return self.datamodule.sample_train_images(n)


class BatchShapes:
    """A loader's first ``batches`` batches, then the first cut to the size of the loader's
    last batch when that is smaller (the size the timed run meets at each epoch's end)."""

    def __init__(self, loader: Any, batches: int) -> None:
        self.loader, self.batches = loader, batches
        size, drop_last = getattr(loader, "batch_size", None), getattr(loader, "drop_last", True)
        sampler = getattr(loader, "sampler", None)
        self.last = 0 if drop_last or not size or sampler is None else len(sampler) % size

    def __len__(self) -> int:
        return self.batches + bool(self.last)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        if (first := next(batches, None)) is None:
            return
        yield first
        yield from itertools.islice(batches, self.batches - 1)
        if self.last:
            yield tuple(t[: self.last] for t in first)


def report(
    cfg: DictConfig, trainer: L.Trainer, warmup_s: float | None, started: float
) -> dict[str, Any] | None:
    """What airbench reports, for ``metrics.json``'s ``timing``; None for an untimed run."""
    clock = next((c for c in trainer.callbacks if isinstance(c, RunClock)), None)
    if clock is None:
        return None
    figures = {**clock.report(), "warmup_s": warmup_s, "cold_start_s": cold_start_s(started)}
    if not figures.get("valid", True):
        log.warning(
            "Timing: %d graph(s) compiled inside the timed segments; the times include "
            "compiling (raise timing.warmup_steps, or check for changing shapes).",
            figures["recompiles"],
        )
    log.info("Timing: %s", figures)
    return figures


_first_run_in_process = True


def cold_start_s(started: float) -> float | None:
    """The run's wall time from a cold start: the first run in a process counts from the
    process's start (interpreter, imports); a later run of a multirun from its own start
    (``started``, a ``perf_counter``), not from the runs before it."""
    global _first_run_in_process
    first, _first_run_in_process = _first_run_in_process, False
    if first and (since_start := seconds_since_start()) is not None:
        return since_start
    return round(time.perf_counter() - started, 2)


def seconds_since_start() -> float | None:
    """Wall time since this process started (Linux), or None where /proc is not there."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None
