"""``last.ckpt``, the one file a resume reads (``callbacks.periodic_checkpoint``): Lightning's
ModelCheckpoint, saving at the end of every epoch and every few minutes (or steps) within one.

Two departures from ModelCheckpoint, both for resumes that end like uninterrupted runs:
- At every epoch end, after validation and the best checkpoint's save, whether or not there
  was a new best: Lightning 2.6's ``save_last`` writes only beside a top-k save, so a run
  whose last epochs did not improve ended with a stale ``last.ckpt``.
- Never after an epoch's last batch: Lightning resumes a checkpoint saved there by going
  straight to the next epoch, skipping the finished epoch's validation. The epoch-end save,
  a moment later, covers that point.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class PeriodicCheckpoint(ModelCheckpoint):
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, *args, **kwargs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here, not at validation's end: Lightning's ModelCheckpoint saves the best epoch here
        # (ahead of this callback), and last.ckpt must hold that.
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
