"""``metrics.json``: one record per run, whatever became of it, and its HPARAMS twin.

Completed, failed and interrupted runs leave the same keys, filled as far as the run got, so a
sweep's results never silently miss a job. :func:`write` is the only writer."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.atomic import atomic_write
from cifar_lightning.run.console import metrics_line
from cifar_lightning.run.loggers import log_hparams
from cifar_lightning.run.resume import drop_superseded_events
from cifar_lightning.run.trainer import device_name
from cifar_lightning.training.callbacks.ema import EMAWeights

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
# Keys only some runs fill: present, as null, in every record so that all share one schema.
OPTIONAL_KEYS = ("tested", "lr_find", "timing", "ema", "mix")


def describe_error(error: BaseException) -> str:
    """``"ZeroDivisionError: integer modulo by zero"``: the type says as much as the text."""
    problem = getattr(error, "problem", None) or str(error).strip()
    return f"{type(error).__name__}: {problem}" if problem else type(error).__name__


def build(
    cfg: DictConfig,
    status: str,
    started: float,
    trainer: L.Trainer | None = None,
    metrics: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The record of a run, as far as ``trainer`` (None: it never started) got; ``metrics``
    default to the trainer's latest."""
    if metrics is None and trainer is not None:
        metrics = trainer.callback_metrics
    model = trainer.lightning_module if trainer is not None else None
    checkpoint = trainer.checkpoint_callback if trainer is not None else None
    best = checkpoint.best_model_path if checkpoint is not None else ""
    values = {k: float(v) for k, v in sorted((metrics or {}).items())}
    return {
        "status": status,
        # NaN is not JSON: a diverged run reports its non-finite values as null.
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
        "params": getattr(model, "num_parameters", None),
        "model": type(model).__name__ if model is not None else None,
        "epochs": trainer.current_epoch if trainer is not None else 0,
        "global_step": trainer.global_step if trainer is not None else 0,
        **stepping(trainer),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "device": device_name(trainer.strategy.root_device) if trainer is not None else None,
        "precision": str(trainer.precision) if trainer is not None else None,
        # data.loader=auto's choice: classic or device.
        "loader": getattr(getattr(trainer, "datamodule", None), "resolved_loader", None),
        "seed": cfg.get("seed"),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "best_checkpoint": best if best and Path(best).is_file() else None,
        "run_dir": str(cfg.paths.output_dir),
        **dict.fromkeys(OPTIONAL_KEYS),
        **training_techniques(trainer),
        **extra,
    }


def training_techniques(trainer: L.Trainer | None) -> dict[str, Any]:
    """``ema`` and ``mix`` as the run used them (null when off): what its numbers mean."""
    callbacks = trainer.callbacks if trainer is not None else []
    ema = next((c for c in callbacks if isinstance(c, EMAWeights)), None)
    techniques: dict[str, Any] = {}
    if ema is not None:
        techniques["ema"] = {
            "decay": ema.decay,
            "warmup": ema.warmup,
            "updates": ema.updates(),
            "weights": "val/*, test/* and the saved checkpoints are of the EMA weights",
        }
    mix = getattr(trainer.lightning_module, "mix", None) if trainer is not None else None
    if mix is not None:
        techniques["mix"] = {
            **mix.settings(),
            "train_acc": "against each mixed image's dominant label",
        }
    return techniques


def stepping(trainer: L.Trainer | None) -> dict[str, Any]:
    """How the run stepped through an epoch, once fit has set it up (else nulls)."""
    steps = trainer.num_training_batches if trainer is not None else math.inf
    if not math.isfinite(steps):
        return {"steps_per_epoch": None, "last_batch_kept": None}
    kept = not getattr(trainer.train_dataloader, "drop_last", False)
    return {"steps_per_epoch": int(steps), "last_batch_kept": kept}


def write(cfg: DictConfig, record: Mapping[str, Any], trainer: L.Trainer | None = None) -> None:
    """``metrics.json`` (rank zero only: DDP's ranks share the run dir), then HPARAMS."""
    if rank_zero_only.rank != 0:
        return
    path = Path(cfg.paths.output_dir) / METRICS_FILE
    atomic_write(path, (json.dumps(record, indent=2) + "\n").encode())
    if record["status"] == "completed":
        shown = ("val/acc_best", "test/acc", "test/acc_top5")
        final = {k: v for k, v in record["metrics"].items() if k in shown and v}
        log.info("Results in %s: %s", path, metrics_line(final))
    if trainer is not None and trainer.state.fn is not None:  # it got to fit or test
        log_hparams(trainer.loggers, OmegaConf.to_container(cfg, resolve=True), record)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # one value per step after a resume
                drop_superseded_events(logger.log_dir)


def discard_unused_run_dir(cfg: DictConfig) -> None:
    """Remove a rejected run's directory (clutter in outputs/ and sweep reports) if it holds only
    bookkeeping (configs, logs, the failure record) and is no resumed run's own."""
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("resume") or not run_dir.is_dir():
        return
    for path in run_dir.rglob("*"):
        bookkeeping = ".hydra" in path.parts or path.suffix == ".log"
        if path.is_file() and not bookkeeping and path.name not in ("hparams.yaml", METRICS_FILE):
            return
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.parent.rmdir()  # the date directory, if this was its only run
