"""What a run needs, beyond Lightning's checkpoint, to be resumed exactly (see run/resume.py).

- Each training step seeds torch (CPU and GPU) from ``(seed, epoch, batch)``: a checkpoint
  does not restore the random-number streams, so a resumed run's dropout masks would differ.
- After a checkpoint the loggers are flushed at the next step's start (its metrics logged):
  TensorBoard's writer may hold two minutes of events that a crash would lose while the newer
  checkpoint survives, leaving a hole in every resumed curve.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lightning.data.classic_loader import derive_seed


class ResumableRun(Callback):
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
