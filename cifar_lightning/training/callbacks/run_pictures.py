"""Lightning callbacks that turn a run into pictures, on disk and in TensorBoard.

Registered in ``conf/callbacks/default.yaml``; drop one with ``~callbacks.NAME``. They only
read what the model logs or returns (``validation_step``/``test_step`` return the logits), so
every architecture gets them for free, and ``evaluate`` reuses :class:`EvaluationFigures`
as is: the pictures at the end of training and those of ``evaluate`` are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lightning.training import figures
from cifar_lightning.training.evaluation import PredictionCollector, Results

log = logging.getLogger(__name__)


class TrainingCurves(Callback):
    """Loss and accuracy per epoch, train and val, as ``curves.png`` and a TensorBoard image.

    The PNG is redrawn after every epoch, so a run that crashes or is stopped still shows its
    curves so far. The history is saved in checkpoints, so a resumed run continues its curves.
    """

    METRICS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")

    def __init__(self, dirpath: str | Path, filename: str = "curves.png") -> None:
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.history: dict[str, list[tuple[int, float]]] = {m: [] for m in self.METRICS}

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    def _record(self, trainer: L.Trainer, prefix: str) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed, as the axis reads
        for name in self.METRICS:
            value = trainer.callback_metrics.get(name)
            if name.startswith(prefix) and value is not None:
                points = [p for p in self.history[name] if p[0] != epoch]  # one point per epoch
                self.history[name] = [*points, (epoch, float(value))]

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val/")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer, "train/")
        if trainer.is_global_zero:
            fig = figures.curves_figure(self.history, title=self._title(pl_module))
            figures.save_png(fig, self.path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and any(self.history.values()):
            fig = figures.curves_figure(self.history, title=self._title(pl_module))
            figures.publish(fig, self.path, trainer.loggers, "curves", trainer.global_step)

    @staticmethod
    def _title(pl_module: L.LightningModule) -> str:
        return f"{type(pl_module).__name__}: loss and accuracy per epoch"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("history", {})
        self.history = {m: [tuple(p) for p in saved.get(m, [])] for m in self.METRICS}


class EvaluationFigures(Callback):
    """After testing: confusion matrix, the green/red grid of test images, the mistakes.

    Writes ``confusion_matrix.png``, ``predictions.png`` and ``misclassified.png`` into
    ``dirpath`` and logs them to TensorBoard under ``test/``, with the per-class accuracies
    (``test/acc_class/<class>``). With ``val_every_n_epochs``
    > 0, the validation confusion matrix also goes to TensorBoard every that many epochs,
    so one can watch the classes separate. After ``trainer.test`` the numbers are in
    :attr:`results`.
    """

    def __init__(
        self,
        dirpath: str | Path,
        sample_size: int = 64,
        mistakes_size: int = 32,
        seed: int = 0,
        val_every_n_epochs: int = 1,
        split_name: str = "test set",
    ) -> None:
        self.dirpath = Path(dirpath)
        self.sample_size = sample_size
        self.mistakes_size = mistakes_size
        self.seed = seed
        self.val_every_n_epochs = val_every_n_epochs
        self.split_name = split_name
        self.results: Results | None = None
        self.files: dict[str, Path] = {}
        self._test: PredictionCollector | None = None
        self._val: PredictionCollector | None = None

    def _collector(self, pl_module: L.LightningModule, pictures: bool) -> PredictionCollector:
        hp = pl_module.hparams
        return PredictionCollector(
            class_names=hp.class_names,
            mean=hp.mean,
            std=hp.std,
            sample_size=self.sample_size if pictures else 0,
            mistakes_size=self.mistakes_size if pictures else 0,
            seed=self.seed,
        )

    # --- validation: the confusion matrix over the epochs, in TensorBoard only ---------------

    def _watch_val(self, trainer: L.Trainer) -> bool:
        n = self.val_every_n_epochs
        return (
            n > 0
            and not trainer.sanity_checking
            and trainer.state.fn == "fit"
            and (trainer.current_epoch + 1) % n == 0
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val = self._collector(pl_module, pictures=False) if self._watch_val(trainer) else None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._val is not None and isinstance(outputs, torch.Tensor):
            self._val.update(batch[0], outputs, batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val is None:
            return
        results = self._val.compute()
        self._val = None
        if trainer.is_global_zero and results.num_images:
            title = (
                f"Validation, epoch {trainer.current_epoch + 1}: "
                f"{results.accuracy:.1%} of {results.num_images:,} images"
            )
            fig = figures.confusion_matrix_figure(results.confusion, results.class_names, title)
            figures.publish(fig, None, trainer.loggers, "val/confusion_matrix", trainer.global_step)

    # --- test: every picture, on disk and in TensorBoard ------------------------------------

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._test = self._collector(pl_module, pictures=True)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._test is not None and isinstance(outputs, torch.Tensor):
            self._test.update(batch[0], outputs, batch[1])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._test is None:
            return
        self.results = self._test.compute()
        self._test = None
        if trainer.is_global_zero and self.results.num_images:
            self.files = self.draw(self.results, trainer)
            per_class = {
                f"test/acc_class/{row['class']}": row["acc"]
                for row in self.results.per_class()
                if row["acc"] is not None
            }
            for logger in trainer.loggers:
                logger.log_metrics(per_class, step=trainer.global_step)

    def draw(self, results: Results, trainer: L.Trainer) -> dict[str, Path]:
        """The PNGs into ``dirpath`` and the same images into TensorBoard."""
        names = results.class_names
        n = results.num_images
        pictures = {
            "confusion_matrix": figures.confusion_matrix_figure(
                results.confusion,
                names,
                f"Confusion matrix, {self.split_name}: {results.accuracy:.1%} of {n:,} images",
            ),
            "predictions": figures.prediction_grid_figure(
                results.sample.images,
                results.sample.targets,
                results.sample.preds,
                names,
                f"{len(results.sample)} random images of the {self.split_name}: "
                "green = right, red = wrong",
            ),
        }
        mistakes = results.mistakes
        if len(mistakes):
            wrong = n - int(np.trace(results.confusion))
            pictures["misclassified"] = figures.misclassified_figure(
                mistakes.images,
                mistakes.targets,
                mistakes.preds,
                mistakes.confidences,
                names,
                f"{len(mistakes)} of the {wrong:,} misclassified images of the {self.split_name}",
            )
        files = {}
        for name, fig in pictures.items():
            path = self.dirpath / f"{name}.png"
            files[name] = figures.publish(
                fig, path, trainer.loggers, f"test/{name}", trainer.global_step
            )
        log.info("Pictures of the %s: %s", self.split_name, ", ".join(map(str, files.values())))
        return files
