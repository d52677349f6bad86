"""What a run needs, beyond Lightning's checkpoint, to be resumed exactly (see run/resume.py)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lightning.data.classic_loader import derive_seed


class ResumableRun(Callback):
    """What a run needs, beyond Lightning's checkpoint, to be resumed exactly.

    - Each training step seeds torch (CPU and GPU) from ``(seed, epoch, batch)``. A checkpoint
      restores weights and optimizer but not the random-number streams, so a resumed run's
      dropout masks would otherwise differ from those of the run it continues.
    - After a checkpoint is saved, the loggers are flushed at the start of the next step (once
      that step's metrics are logged). TensorBoard's writer otherwise keeps up to two minutes
      of events in memory; a crash would lose them while the checkpoint, newer, survives, and
      the resumed run would leave a hole in every curve.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._flush = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        torch.manual_seed(derive_seed(self.seed, trainer.current_epoch, batch_idx))
        if self._flush:
            for logger in trainer.loggers:
                logger.save()
            self._flush = False

    def on_save_checkpoint(self, *args: Any) -> None:
        self._flush = True
