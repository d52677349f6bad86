"""Pruning, on the trial's side: every validation epoch the run reports ``optimized_metric``
to its study, and stops at once when the study's pruner says the trial is not worth finishing.

The sweeper tells each job which trial it is (``hydra.sweeper.trial``: its id, the study and
the storage), so this works in any process the launcher picks: joblib workers, submitit jobs
on other machines. The stop is :class:`Pruned`; ``train()`` records it as status ``pruned``
and the sweeper tells the study so.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from cifar_lightning.run.search.storage import open_storage
from cifar_lightning.run.search.study import make_pruner

log = logging.getLogger(__name__)


class Pruned(optuna.TrialPruned):
    """The study's pruner stopped this trial after ``epoch`` epochs at ``value``."""

    def __init__(self, epoch: int, metric: str, value: float, pruner: str) -> None:
        super().__init__(epoch, metric, value, pruner)
        self.epoch, self.metric, self.value, self.pruner = epoch, metric, value, pruner
        self.problem = (
            f"pruned by the {pruner} pruner after epoch {epoch} ({metric}={value:.4g}): "
            "earlier trials were better at this point"
        )

    def __str__(self) -> str:
        return self.problem


class ReportToStudy(Callback):
    """Reports ``metric`` after each validation (epoch index as the step); rank zero asks
    the pruner and every rank stops with it."""

    def __init__(self, trial: optuna.Trial, metric: str, pruner: str) -> None:
        self.trial, self.metric, self.pruner = trial, metric, pruner
        self._warned = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        prune = False
        if trainer.is_global_zero:
            if value is None:
                if not self._warned:
                    log.warning(
                        "optimized_metric=%s is not logged at validation: trial %d reports "
                        "nothing to the pruner and runs to the end.",
                        self.metric,
                        self.trial.number,
                    )
                    self._warned = True
            elif math.isfinite(number := float(value)):
                self.trial.report(number, step=trainer.current_epoch)
                prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            epoch, number = trainer.current_epoch + 1, float(value)
            stop = Pruned(epoch, self.metric, number, self.pruner)
            log.info("Trial %d %s.", self.trial.number, stop.problem)
            raise stop


def callbacks(cfg: DictConfig) -> list[Callback]:
    """The reporter, when this run is a trial of a search that prunes; else nothing."""
    if not HydraConfig.initialized():
        return []
    sweeper = HydraConfig.get().sweeper
    trial: Any = sweeper.get("trial")
    if not trial or str(sweeper.get("pruner")).lower() in ("none", "null", "false"):
        return []
    pruner = make_pruner(sweeper.get("pruner"), sweeper.get("pruning"))
    storage = open_storage(trial.storage)
    study = optuna.load_study(
        study_name=trial.study_name,
        storage=storage,
        pruner=pruner,
        sampler=optuna.samplers.RandomSampler(),
    )
    metric = str(cfg.get("optimized_metric"))
    return [ReportToStudy(optuna.Trial(study, int(trial.id)), metric, str(sweeper.pruner))]
