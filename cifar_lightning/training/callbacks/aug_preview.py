"""The training augmentation in TensorBoard at step 0 and as ``aug_preview.png`` in the run dir.

An augmentation is easy to get subtly wrong (a fill colour, a border mode, a too strong crop)
and hard to see from numbers; this is the grid ``python -m cifar_lightning.show_aug`` draws.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from cifar_lightning.training import figures
from cifar_lightning.training.aug_grid import preview

TAG = "aug/preview"
FILENAME = "aug_preview.png"


class AugmentationPreview(Callback):
    def __init__(self, images: int = 10, draws: int = 8, seed: int = 0, save: bool = True) -> None:
        self.images, self.draws, self.seed, self.save = images, draws, seed, save

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "train_set", None)
        if not trainer.is_global_zero or dataset is None or datamodule.aug is None:
            return
        title = f"training augmentation: {len(dataset):,} images, each drawn {self.draws}x"
        draw = preview(
            dataset, datamodule.classes, datamodule.aug, title, self.images, self.draws, self.seed
        )
        path = Path(trainer.default_root_dir) / FILENAME if self.save else None
        figures.publish(draw, path, trainer.loggers, TAG)
