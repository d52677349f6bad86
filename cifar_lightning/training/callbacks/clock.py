"""The clock of a timed run (``timing.enabled``): airbench's segments from Lightning's hooks,
with CUDA events on a GPU and ``time.perf_counter`` on a CPU."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


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
    to the device); train_s: the training part of every epoch, not validation; test_s."""

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

    on_train_epoch_end = on_validation_start

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
        clock = "CUDA events" if self.segments.cuda else "time.perf_counter"
        return {**parts, "total_s": round(sum(parts.values()), 4), "clock": clock}
