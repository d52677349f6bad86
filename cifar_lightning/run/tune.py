"""``tune.lr_find=true``: an LR range test before training (Lightning's ``Tuner.lr_find``).

The test trains ``tune.num_training`` steps while the LR grows from ``tune.min_lr`` to
``tune.max_lr``; the LR where the loss falls fastest becomes ``optim.lr`` and the one-cycle
``max_lr`` (seed 004 found its LR this way). It runs on its own Trainer (a run cut short
still gets a full test) and on a throwaway copy of the model inside a saved RNG state, so the
run that follows is exactly the one the suggested LR on the command line would give.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure
from omegaconf import DictConfig

from cifar_lightning.errors import ConfigError, UserError
from cifar_lightning.run.config import build
from cifar_lightning.run.trainer import ONE_DEVICE, SIDE_RUN, make_trainer
from cifar_lightning.training import figures

log = logging.getLogger(__name__)

PLOT_NAME = "lr_find.png"


def check(tune: DictConfig, trainer: DictConfig) -> None:
    """What the schema cannot say alone: an LR range and one process to test in."""
    if not tune.min_lr < tune.max_lr:
        raise ConfigError(
            f"tune.min_lr={tune.min_lr} and tune.max_lr={tune.max_lr} must satisfy "
            "0 < min_lr < max_lr.",
            fix="e.g. tune.min_lr=1e-6 tune.max_lr=1",
        )
    if _several_processes(trainer):
        # Each process would run its own test and could pick its own LR.
        raise ConfigError(
            "tune.lr_find runs the range test in one process on one device; this run uses several.",
            fix="run the test alone first (add trainer.devices=1 trainer.num_nodes=1 "
            "trainer.max_epochs=1 trainer.limit_train_batches=1), then pass its suggestion "
            "(lr_find.suggestion in metrics.json) as optim.lr=… with tune.lr_find=false",
        )


def _several_processes(trainer: DictConfig) -> bool:
    """Whether the run trains in more than one process (DDP), as far as its config says."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or (trainer.get("num_nodes") or 1) > 1:
        return True
    devices = trainer.get("devices", "auto")
    if devices in ("auto", -1, "-1"):
        on_gpu = trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        return on_gpu and torch.cuda.device_count() > 1
    if isinstance(devices, str):  # "2", or device ids "0,1"
        devices = int(devices) if devices.strip().isdigit() else devices.strip(",").split(",")
    return devices > 1 if isinstance(devices, int) else len(devices) > 1


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run the block, then put every global RNG (torch, CUDA, NumPy, random) back as it was."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def find_lr(cfg: DictConfig, datamodule: Any, loggers: Iterable[Logger]) -> dict[str, Any] | None:
    """Run the test, use its suggestion, publish its plot; returns what metrics.json keeps."""
    with rng_preserved():
        finder = _range_test(build(cfg.model, "model"), datamodule, cfg)
    if finder is None:  # Lightning skips it under fast_dev_run
        log.warning("trainer.fast_dev_run: skipping the LR range test; optim.lr stays as set.")
        return None
    suggestion, losses = finder.suggestion(), list(finder.results["loss"])
    if suggestion is None:
        finite = sum(math.isfinite(loss) for loss in losses)
        raise UserError(
            f"the LR range test gave no suggestion: {finite} of its {len(losses)} steps "
            f"(tune.num_training={cfg.tune.num_training}) gave a finite loss before it "
            "diverged, too few to find where the loss falls fastest.",
            fix="lower tune.max_lr or raise tune.early_stop_threshold (null: never stop "
            "early); or set optim.lr yourself with tune.lr_find=false",
        )
    use_lr(cfg, suggestion)
    path = Path(cfg.paths.output_dir) / PLOT_NAME
    figures.publish(functools.partial(lr_find_figure, finder), path, loggers, "tune/lr_find")
    log.info("LR range test (%d steps): suggested lr %.4g; plot: %s", len(losses), suggestion, path)
    return {"suggestion": float(suggestion), "steps": len(losses), "plot": str(path)}


def lr_find_figure(finder: Any, *, card: bool = False) -> Figure:
    """Loss against LR (log scale), the suggestion marked: Lightning's plot, drawn on a figure
    of :mod:`figures` (no pyplot), full size or as TensorBoard's card."""
    fig = figures.card_figure() if card else figures.new_figure(6.4, 4.8)
    ax = fig.add_subplot()
    finder.plot(suggest=True, ax=ax)
    ax.set_title(f"LR range test: suggested lr = {finder.suggestion():.3g}")
    ax.grid(True, which="both", alpha=0.3)
    return fig


def _range_test(model: L.LightningModule, datamodule: Any, cfg: DictConfig) -> Any:
    tune = cfg.tune
    if cfg.trainer.get("fast_dev_run"):
        return None
    # Its own length is num_training steps, whatever limits the run has (max_steps also
    # gives the model's one-cycle schedule, replaced by the test's, a finite length).
    trainer = make_trainer(
        cfg.trainer,
        default_root_dir=cfg.paths.output_dir,
        **SIDE_RUN,  # its scratch checkpoint is Lightning's own, not a run's: no plugins
        **ONE_DEVICE,
        max_steps=int(tune.num_training),
        limit_val_batches=0,  # no validation: only time
    )
    with _quiet():
        return Tuner(trainer).lr_find(
            model,
            # The datamodule, not a loader made here: the loader is built once the Trainer
            # is attached (on its device), and a model can ask trainer.datamodule for data.
            datamodule=datamodule,
            min_lr=float(tune.min_lr),
            max_lr=float(tune.max_lr),
            num_training=int(tune.num_training),
            mode=str(tune.mode),
            early_stop_threshold=tune.get("early_stop_threshold"),
            update_attr=False,
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Drop Lightning's notices that the test has no validation (on purpose) and that its
    scratch checkpoint of the initial weights loads without weights_only."""
    checkpoint_log = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    level = checkpoint_log.level
    checkpoint_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no")
            yield
    finally:
        checkpoint_log.setLevel(level)


def use_lr(cfg: DictConfig, lr: float) -> None:
    """The suggestion becomes the optimizer's LR and the scheduler's peak (one-cycle max_lr)."""
    cfg.optim.lr = lr
    scheduler = cfg.sched.get("scheduler")
    if scheduler is not None and "max_lr" in scheduler:
        scheduler.max_lr = lr
