"""The clock of a timed run (``timing.enabled``): airbench's segments from Lightning's hooks,
with CUDA events on a GPU and ``time.perf_counter`` on a CPU."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def compiled_graphs() -> int:
    """Graphs ``torch.compile`` has made in this process so far (every recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class _Segments:
    """Named, possibly repeated, time segments; CUDA events are read only at the end. Each
    also counts the graphs compiled inside it: a time that includes compiling is no time."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.open: dict[str, tuple[Any, int]] = {}
        self.closed: dict[str, list[tuple[Any, Any]]] = {}
        self.compiles: dict[str, int] = {}

    def _mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def start(self, name: str) -> None:
        graphs = compiled_graphs()  # counted before the mark, as stop counts after it
        self.open[name] = (self._mark(), graphs)

    def stop(self, name: str) -> None:
        if name in self.open:
            start, graphs = self.open.pop(name)
            self.closed.setdefault(name, []).append((start, self._mark()))
            self.compiles[name] = self.compiles.get(name, 0) + compiled_graphs() - graphs

    def seconds(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        return {
            name: sum((a.elapsed_time(b) / 1e3) if self.cuda else (b - a) for a, b in pairs)
            for name, pairs in self.closed.items()
        }


class RunClock(Callback):
    """setup_s: the data-dependent init (the whitening, in the module's ``on_fit_start``) and
    the data's move to the device, up to the first training batch; train_s: the training part
    of every epoch, not validation; test_s. ``recompiles``: graphs compiled inside them.

    First among the callbacks, so its segments close before the others' epoch-end work; its
    :attr:`starter` goes last, so that the others' ``on_fit_start`` (the model summary's
    example forward, the augmentation preview) stays outside the setup, as in airbench."""

    def __init__(self) -> None:
        self.segments: _Segments | None = None
        self.starter = _StartSetup(self)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.segments = _Segments(cuda=pl_module.device.type == "cuda")

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
        recompiles = sum(self.segments.compiles.values())
        return {**parts, "total_s": round(sum(parts.values()), 4), "clock": clock,
                "recompiles": recompiles, "valid": recompiles == 0}  # fmt: skip


class _StartSetup(Callback):
    """The last callback: opens the clock's setup segment after every other ``on_fit_start``
    and right before the module's own (where the whitening runs)."""

    def __init__(self, clock: RunClock) -> None:
        self.clock = clock

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.clock.segments is not None:
            self.clock.segments.start("setup")
