"""The LightningModule every net trains under: loss, metrics, optimizer and scheduler.

Net, optimizer, scheduler and loss arrive as plain ``_target_`` dicts, never live objects, so
the hyper-parameters stay plain data and a checkpoint rebuilds the model alone, weights-only.
Any ``nn.Module`` taking ``num_classes`` and returning logits trains here with no code of its own.
``mix`` (MixUp/CutMix, training/mixing.py) reshapes the training batches only.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import get_object, instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from cifar_lightning.data.datamodule import CIFAR10_MEAN, CIFAR10_STD
from cifar_lightning.data.sources import CIFAR10_CLASSES
from cifar_lightning.training.mixing import build_mix, dominant_label
from cifar_lightning.training.tta import tta_logits

log = logging.getLogger(__name__)

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05}
DEFAULT_LOSS = {"_target_": "torch.nn.CrossEntropyLoss"}


def build_net(spec: Mapping[str, Any], num_classes: int) -> nn.Module:
    """``spec``'s net with ``num_classes`` handed to it; the target must be an ``nn.Module``
    class, checked before it is called (a crafted checkpoint must not call anything else)."""
    target = spec.get("_target_")
    cls = get_object(str(target)) if target else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"net._target_={target!r} is not an nn.Module class")
    return instantiate({**spec, "num_classes": num_classes})


def make_scheduler(
    spec: Mapping[str, Any], optimizer: torch.optim.Optimizer, total_steps: Callable[[], int]
) -> dict[str, Any] | None:
    """``sched``'s scheduler as Lightning takes it; one-cycle-style schedules get the run's
    length from ``total_steps`` (the Trainer knows epochs, limits, accumulation, devices)."""
    if not spec.get("scheduler"):
        return None
    make = instantiate(dict(spec["scheduler"]))
    kwargs = {}
    if (
        "total_steps" in inspect.signature(make.func).parameters
        and "total_steps" not in make.keywords
    ):
        kwargs["total_steps"] = total_steps()
        pct = make.keywords.get("pct_start")
        if pct is not None and kwargs["total_steps"] >= 2:
            # torch's OneCycleLR divides by (pct_start * total_steps - 1): zero in a 5-step run
            # at 0.2. A warm-up of at least 1.5 steps keeps tiny runs (smoke tests) running.
            kwargs["pct_start"] = max(float(pct), 1.5 / kwargs["total_steps"])
    interval, frequency = spec.get("interval", "epoch"), spec.get("frequency", 1)
    return {"scheduler": make(optimizer, **kwargs), "interval": interval, "frequency": frequency}


class ImageClassifier(L.LightningModule):
    """Logs ``train/{loss,lr}`` (on the steps the loggers write), ``train/{loss_epoch,acc}``,
    ``val/{loss,acc,acc_best}`` and ``test/{loss,acc,acc_top5,ece,mce,nll,brier}``; subclasses
    (training/architectures.py) add only what their net needs (a default ``NET``, groups).

    With ``mix`` on, the loss takes the mixed images' class probabilities and ``train/acc``
    counts a mixed image as right when the prediction is its dominant label (the larger share):
    there is no single right answer for a blend."""

    NET: dict[str, Any] | None = None  # the net when none is given (an architecture's own)

    def __init__(
        self,
        net: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        mix: Mapping[str, Any] | None = None,
        class_names: Sequence[str] = CIFAR10_CLASSES,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        # The subclass's arguments too: a checkpoint rebuilds it. Not to the loggers: they get
        # the hyper-parameters a person compares, at the end (run/loggers.py).
        self.save_hyperparameters(logger=False)
        num_classes = len(class_names)
        spec = net or self.NET
        if spec is None:
            raise TypeError(f"{type(self).__name__} needs a net: {{_target_: ...}}")
        self.net = build_net(spec, num_classes)
        self.criterion = instantiate(dict(loss or DEFAULT_LOSS))
        self.mix = build_mix(mix, num_classes)  # None: batches train as they come
        # nan_strategy="disable": the default NaN check reads a flag back to the host on
        # every update — on a GPU, a wait for all queued work at every step.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        self.test_loss = MeanMetric(nan_strategy="disable")
        # validate_args=False: the argument check calls torch.unique on the targets, another
        # host sync per update; our loaders' labels are class indices by construction.
        accuracy = dict(num_classes=num_classes, average="micro", validate_args=False)
        self.train_acc = MulticlassAccuracy(top_k=1, **accuracy)
        self.val_acc = MulticlassAccuracy(top_k=1, **accuracy)
        self.test_acc = MulticlassAccuracy(top_k=1, **accuracy)
        self.test_acc_top5 = MulticlassAccuracy(top_k=min(5, num_classes), **accuracy)
        # Can its confidence be trusted (training/calibration.py says what each measures)?
        bins = dict(num_classes=num_classes, n_bins=15, validate_args=False)
        self.test_ece = MulticlassCalibrationError(norm="l1", **bins)
        self.test_mce = MulticlassCalibrationError(norm="max", **bins)
        self.test_nll = MeanMetric(nan_strategy="disable")
        self.test_brier = MeanMetric(nan_strategy="disable")
        self.val_acc_best = MaxMetric()
        # In checkpoints: a run resumed mid-epoch reports the epoch as one never interrupted.
        for metric in (self.train_loss, self.train_acc, self.val_acc_best):
            metric.persistent(True)
        self.example_input_array = torch.zeros(1, 3, 32, 32)  # sizes and FLOPs in the summary
        self.test_tta = "none"  # test.tta: an evaluation choice, not part of the model
        self._epoch_metrics_logged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # the sanity check's val/acc is no "best" epoch
            self.val_acc_best.reset()
        if self.mix is not None:
            log.info("%s on the training batches: train/acc is against each mixed image's "
                     "dominant label.", self.mix)  # fmt: skip

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        logits = self(x)
        return self.criterion(logits, y), logits, y

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mix is not None:  # soft targets for the loss; the dominant label for train/acc
            x, targets = self.mix(x, y)
            y = dominant_label(targets)
        else:
            targets = y
        logits = self(x)
        loss = self.criterion(logits, targets)
        # No host syncs per step: the metrics accumulate on the device, and the per-step
        # values are read back only on the steps the loggers write (log_every_n_steps).
        self.train_loss.update(loss.detach())
        self.train_acc.update(logits.detach(), y)
        self._log_epoch_metrics()
        if self._loggers_write_this_step():
            # A CPU tensor each: a device tensor for the progress bar would be read back
            # every step, and a float would be copied to the device first (a wait too).
            self.log("train/loss", loss.detach().cpu(), on_step=True, on_epoch=False, prog_bar=True)
            lr = self.optimizers().param_groups[0]["lr"]
            self.log("train/lr", torch.tensor(float(lr)), on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_metrics_logged = False

    def _log_epoch_metrics(self) -> None:
        """Hand the epoch's accumulators to Lightning once per epoch, on its first step.

        Early enough that callbacks' on_train_epoch_end (the curves) read this epoch's values,
        and again after a mid-epoch resume, whose restored logging state must point here.
        """
        if not self._epoch_metrics_logged:
            self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
            self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
            self._epoch_metrics_logged = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint saved once the epoch's last batch has trained holds the train
        accumulators as the next epoch starts them (empty): Lightning empties them only after
        the epoch-end checkpoints are written, and a run resumed there would otherwise fold
        the finished epoch into the next one's train/loss_epoch and train/acc."""
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done < trainer.num_training_batches:
            return
        for name in ("train_loss", "train_acc"):
            fresh = copy.deepcopy(getattr(self, name))
            fresh.reset()
            checkpoint["state_dict"].update(fresh.state_dict(prefix=f"{name}."))

    def _loggers_write_this_step(self) -> bool:
        """Lightning's rule for when ``Trainer(log_every_n_steps)`` writes a training step."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return True
        every = trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits, y = self._shared_step(batch)
        self.val_loss(loss)
        self.val_acc(logits, y)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)
        return logits  # for the callbacks' pictures (on_validation_batch_end)

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = tta_logits(self, x, self.test_tta)
        loss = self.criterion(logits, y)
        self.test_loss(loss)
        self.test_acc(logits, y)
        self.test_acc_top5(logits, y)
        self.log("test/loss", self.test_loss, on_step=False, on_epoch=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True, prog_bar=True)
        self.log("test/acc_top5", self.test_acc_top5, on_step=False, on_epoch=True)
        probs = logits.float().softmax(dim=1)
        self.test_ece(probs, y)
        self.test_mce(probs, y)
        self.test_nll(F.cross_entropy(logits.float(), y, reduction="none"))
        self.test_brier(((probs - F.one_hot(y, probs.shape[1])) ** 2).sum(dim=1))
        for name in ("ece", "mce", "nll", "brier"):
            self.log(f"test/{name}", getattr(self, f"test_{name}"), on_step=False, on_epoch=True)
        return logits

    def param_groups(self) -> Any:
        """What the optimizer updates; architectures override it for per-group settings."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(dict(self.hparams.optimizer or DEFAULT_OPTIMIZER))(
            params=self.param_groups()
        )
        total = lambda: int(self.trainer.estimated_stepping_batches)  # noqa: E731
        scheduler = make_scheduler(self.hparams.scheduler or {}, optimizer, total)
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    @property
    def num_parameters(self) -> int:
        """Trainable parameters: what the seed projects quote."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
