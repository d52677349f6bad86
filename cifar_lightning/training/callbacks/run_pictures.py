"""Callbacks that turn a run into pictures, on disk and in TensorBoard (``conf/callbacks/``).

They only read what the model logs or returns (``validation_step``/``test_step`` return the
logits), so every architecture gets them, and ``evaluate``'s pictures are training's."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib.figure import Figure

from cifar_lightning.data.sources import superclasses
from cifar_lightning.training import figures
from cifar_lightning.training.calibration import calibration, reliability_bins, reliability_figure
from cifar_lightning.training.predictions import PredictionCollector, Results

log = logging.getLogger(__name__)
SCALARS_UP_TO = 10  # classes whose test accuracies also go to TensorBoard as scalars


class TrainingCurves(Callback):
    """Loss and accuracy per epoch as ``curves.png`` (redrawn every epoch, so a crashed run
    still shows its curves) and, at the end, a TensorBoard image. The history is checkpointed,
    so a resumed run continues its curves."""

    METRICS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")

    def __init__(self, dirpath: str | Path, filename: str = "curves.png") -> None:
        self.dirpath, self.filename = Path(dirpath), filename
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
            figures.save_png(self._figure(pl_module), self.path)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and any(self.history.values()):
            draw = functools.partial(self._figure, pl_module)
            figures.publish(draw, self.path, trainer.loggers, "curves", trainer.global_step)

    def _figure(self, pl_module: L.LightningModule, *, card: bool = False) -> Figure:
        title = f"{type(pl_module).__name__}: loss and accuracy per epoch"
        mixed = getattr(pl_module, "mix", None) is not None
        mixed_label = "train (mixed)" if card else "train (dominant label of the mixed images)"
        train_acc = mixed_label if mixed else "train"
        return figures.curves_figure(self.history, title=title, train_acc=train_acc, card=card)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("history", {})
        self.history = {m: [tuple(p) for p in saved.get(m, [])] for m in self.METRICS}


class EvaluationFigures(Callback):
    """After testing: ``confusion_matrix.png`` (CIFAR-100: by superclass),
    ``class_accuracy.png`` (bars; beyond 20 classes the 20 worst), ``predictions.png``
    (green/red grid), ``misclassified.png`` and ``calibration.png`` (the reliability diagram)
    in ``dirpath``; under ``test/`` in TensorBoard their cards (sized to read in its image
    cards, see :mod:`figures`) and ``test/acc_class/<class>`` (up to 10 classes); the numbers
    in :attr:`results`. Every ``val_every_n_epochs`` (> 0) epochs the validation confusion
    matrix goes to TensorBoard, to watch classes separate.
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
        self.dirpath, self.split_name = Path(dirpath), split_name
        self.sample_size, self.mistakes_size, self.seed = sample_size, mistakes_size, seed
        self.val_every_n_epochs = val_every_n_epochs
        self.results: Results | None = None
        self.files: dict[str, Path] = {}
        self._pass: PredictionCollector | None = None  # of the validation or test in progress

    def _collector(self, pl_module: L.LightningModule, pictures: bool) -> PredictionCollector:
        hp = pl_module.hparams
        sizes = (self.sample_size, self.mistakes_size) if pictures else (0, 0)
        return PredictionCollector(hp.class_names, hp.mean, hp.std, *sizes, seed=self.seed)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = self.val_every_n_epochs
        due = n > 0 and (trainer.current_epoch + 1) % n == 0
        watch = due and trainer.state.fn == "fit" and not trainer.sanity_checking
        self._pass = self._collector(pl_module, pictures=False) if watch else None

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self._pass is not None and isinstance(outputs, torch.Tensor):
            self._pass.update(batch[0], outputs, batch[1])

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Only the confusion matrix, only in TensorBoard: to watch it over the epochs."""
        if self._pass is None:
            return
        results, self._pass = self._pass.compute(), None
        if trainer.is_global_zero and results.num_images:
            title = f"Validation, epoch {trainer.current_epoch + 1}"
            draw = functools.partial(_confusion, results, title)
            figures.publish(
                draw, None, trainer.loggers, "val/confusion_matrix", trainer.global_step
            )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pass = self._collector(pl_module, pictures=True)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pass is None:
            return
        self.results, self._pass = self._pass.compute(), None
        if trainer.is_global_zero and self.results.num_images:
            self.files = self.draw(self.results, trainer)
            rows = self.results.per_class()
            if len(rows) <= SCALARS_UP_TO:  # beyond, one chart each would bury the dashboard
                accs = {f"test/acc_class/{r['class']}": r["acc"] for r in rows}
                per_class = {tag: acc for tag, acc in accs.items() if acc is not None}
                for logger in trainer.loggers:
                    logger.log_metrics(per_class, step=trainer.global_step)

    def draw(self, results: Results, trainer: L.Trainer) -> dict[str, Path]:
        """The PNGs into ``dirpath``, and their cards into TensorBoard."""
        names, split, s, m = results.class_names, self.split_name, results.sample, results.mistakes
        pictures: dict[str, figures.Drawing] = {
            "confusion_matrix": functools.partial(_confusion, results, f"Confusion matrix, {split}")
        }
        k = len(names)
        title = f"Accuracy per class, {split}" + (f": the 20 worst of {k}" if k > 20 else "")
        pictures["class_accuracy"] = functools.partial(
            figures.class_accuracy_figure, results.per_class(), results.accuracy, title
        )
        title = f"{len(s)} random images of the {split}: green = right, red = wrong"
        pictures["predictions"] = functools.partial(
            figures.prediction_grid_figure, s.images, s.targets, s.preds, names, title
        )
        if len(m):
            wrong = results.num_images - int(np.trace(results.confusion))
            title = f"{len(m)} of the {wrong:,} misclassified images of the {split}"
            pictures["misclassified"] = functools.partial(
                figures.misclassified_figure, m.images, m.targets, m.preds, m.confidences, names,
                title,
            )  # fmt: skip
        if len(results.targets):
            scores = calibration(results.logits, results.targets)
            title = f"Reliability, {split}: ECE {scores['ece']:.2%}"
            bins = reliability_bins(results.logits, results.targets)
            pictures["calibration"] = functools.partial(reliability_figure, bins, scores, title)
        files = {}
        for name, draw in pictures.items():
            path, tag = self.dirpath / f"{name}.png", f"test/{name}"
            files[name] = figures.publish(draw, path, trainer.loggers, tag, trainer.global_step)
        log.info("Pictures of the %s: %s", self.split_name, ", ".join(map(str, files.values())))
        return files


def _confusion(results: Results, title: str, *, card: bool = False) -> Figure:
    """The confusion matrix; with CIFAR-100's classes, summed into its 20 superclasses."""
    names, matrix = results.class_names, results.confusion
    groups = superclasses(names) if len(names) > 20 else None
    if groups:
        matrix, names = figures.group_confusion(matrix, names, groups), list(groups)
        title += " (by superclass)"
    return figures.confusion_matrix_figure(matrix, names, f"{title}: {_score(results)}", card=card)


def _score(results: Results) -> str:
    return f"{results.accuracy:.1%} of {results.num_images:,} images"
