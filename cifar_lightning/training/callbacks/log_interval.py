"""``trainer.log_every_n_steps=auto``: log the training steps a few times an epoch, whatever
its length, so a short run still draws its loss and LR curves.

Lightning's fixed default (50) logs a 10-step epoch never within it and warns that "the number
of training batches is smaller than the logging interval". The interval wants the epoch's
length, which Lightning knows only once it has set up the training loader — the moment it
warns. So the Trainer starts at 1 (never shorter than an epoch: no warning) and
``on_train_start``, with the length known, sets the real interval: ``steps_per_epoch //
per_epoch``, at least 1, at most ``most``.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import Callback

PLACEHOLDER = 1  # the Trainer's interval until on_train_start


def epoch_log_interval(steps_per_epoch: int, per_epoch: int = 4, most: int = 50) -> int:
    """``min(most, max(1, steps_per_epoch // per_epoch))``: 391 steps -> 50, 10 -> 2, 3 -> 1."""
    return min(most, max(1, steps_per_epoch // per_epoch))


class EpochLogInterval(Callback):
    """Sets ``trainer.log_every_n_steps`` from the epoch's optimizer steps (see the module)."""

    def __init__(self, per_epoch: int = 4, most: int = 50) -> None:
        self.per_epoch, self.most = per_epoch, most

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = trainer.num_training_batches
        if not math.isfinite(batches):  # an iterable loader of unknown length
            trainer.log_every_n_steps = self.most
            return
        steps = int(batches) // max(1, trainer.accumulate_grad_batches)
        trainer.log_every_n_steps = epoch_log_interval(steps, self.per_epoch, self.most)
