"""Callbacks the GPU campaign (``python -m cifar_lightning.reproduce``) adds to a run through
its config: a recipe cut to whole epochs that fit the budget, and a count of host syncs."""

from __future__ import annotations

import statistics
import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class StopAfterEpochs(Callback):
    """Ends the run after ``epochs`` whole epochs with the recipe's schedule unchanged (its
    length still the full recipe's): a partial run, never a silently shorter recipe."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class HostSyncCounter(Callback):
    """Host-device syncs inside each training step after the first ``skip``, as
    ``torch.cuda.set_sync_debug_mode("warn")`` reports them; logs their mean and maximum per
    step (``check/host_syncs_per_step``, ``check/host_syncs_max``). Off CUDA it counts nothing."""

    def __init__(self, skip: int = 3) -> None:
        self.skip = skip
        self.counts: list[int] = []
        self._catching: Any = None
        self._seen: list[warnings.WarningMessage] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type != "cuda" or trainer.global_step < self.skip:
            return
        self._catching = warnings.catch_warnings(record=True)
        self._seen = self._catching.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._catching is None:
            return
        torch.cuda.set_sync_debug_mode("default")
        self._catching.__exit__(None, None, None)
        self._catching = None
        self.counts.append(sum("synchroniz" in str(w.message) for w in self._seen))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.counts:
            pl_module.log("check/host_syncs_per_step", float(statistics.mean(self.counts)))
            pl_module.log("check/host_syncs_max", float(max(self.counts)))
