"""``timing.enabled=true``: time a run the way airbench reports its record times.

airbench's figure is GPU time, taken with CUDA events, of: the data-dependent initialisation
(the whitening layer), the training epochs (not the per-epoch evaluation) and the final test
with test-time augmentation — after an untimed warm-up run that has compiled kernels and
tuned cuDNN. :class:`RunClock` takes the same segments from Lightning's hooks (CUDA events on
a GPU, ``time.perf_counter`` on a CPU); :func:`warm_up` is the untimed warm-up, reported
separately; :func:`seconds_since_process_start` gives the cold-start wall time of the whole
command (Python start-up, imports, data loading and all).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class _Segments:
    """Named, possibly repeated, time segments; CUDA events are read only at the end."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.open: dict[str, Any] = {}
        self.closed: dict[str, list[tuple[Any, Any]]] = {}

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self, name: str) -> None:
        self.open[name] = self._mark()

    def stop(self, name: str) -> None:
        if name in self.open:
            self.closed.setdefault(name, []).append((self.open.pop(name), self._mark()))

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        return {
            name: sum((a.elapsed_time(b) / 1e3) if self.cuda else (b - a) for a, b in pairs)
            for name, pairs in self.closed.items()
        }


class RunClock(Callback):
    """setup_s: fit start → first training batch (data-dependent init such as whitening, data
    to the device); train_s: the training part of every epoch; test_s: the final test."""

    def __init__(self) -> None:
        self.segments: _Segments | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks' on_fit_start runs before the module's: the whitening init is inside.
        self.segments = _Segments(cuda=pl_module.device.type == "cuda")
        self.segments.start("setup")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.segments.stop("setup")
        self.segments.start("train")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The end-of-epoch validation is not training time (airbench leaves it out too).
        if self.segments is not None and not trainer.sanity_checking:
            self.segments.stop("train")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.segments.stop("train")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.segments is None:
            self.segments = _Segments(cuda=pl_module.device.type == "cuda")
        self.segments.start("test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.segments.stop("test")

    def report(self) -> dict[str, Any]:
        if self.segments is None:
            return {}
        s = self.segments.seconds()
        parts = {f"{k}_s": round(s.get(k, 0.0), 4) for k in ("setup", "train", "test")}
        return {
            **parts,
            "total_s": round(sum(parts.values()), 4),
            "clock": "CUDA events" if self.segments.cuda else "time.perf_counter",
        }


def warm_up(
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    trainer_kwargs: dict[str, Any],
    callbacks: list[Callback],
    steps: int,
) -> float:
    """An untimed throwaway fit of ``steps`` steps (plus a test pass) on ``model``, then the
    model put back exactly as it was: it compiles kernels and tunes cuDNN for the timed run.

    Returns its wall time. The caller keeps the global RNGs as they were (see
    :func:`cifar_lightning.tune.rng_preserved`), so the timed run is the run it would have
    been without a warm-up.
    """
    state = copy.deepcopy(model.state_dict())
    started = time.perf_counter()
    trainer = L.Trainer(
        **{
            **trainer_kwargs,
            "max_epochs": -1,
            "max_steps": steps,
            "max_time": None,
            "limit_val_batches": 2,
            "limit_test_batches": 2,
            "num_sanity_val_steps": 0,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        logger=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.load_state_dict(state)
    return seconds


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (Linux), or None where /proc is not there."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None
