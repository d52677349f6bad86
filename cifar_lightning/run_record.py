"""``metrics.json`` for a run that did not complete: its status, its error and how far it got.

A completed run's ``metrics.json`` is written by :func:`cifar_lightning.train.train`. A run
that fails — in a sweep above all — must leave a record too, or a sweep's results would
silently miss it: same keys, ``"status": "failed"`` (``"interrupted"`` for Ctrl-C) and an
``"error"`` string. Failures inside ``trainer.fit``/``trainer.test`` are recorded by the
:class:`RecordFailure` callback, which still sees the trainer (epoch, step, the metrics so
far, the best checkpoint); anything earlier (data, model) by :func:`record_failure`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

METRICS_FILE = "metrics.json"


def describe_error(error: BaseException) -> str:
    """``"ZeroDivisionError: integer modulo by zero"``: the type says as much as the text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def failure_record(
    cfg: DictConfig,
    error: BaseException,
    wall_time_s: float,
    trainer: L.Trainer | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The keys of a completed run's record, filled as far as the run got, plus ``error``."""
    model = trainer.lightning_module if trainer is not None else None
    checkpoint = trainer.checkpoint_callback if trainer is not None else None
    metrics: Mapping[str, Any] = trainer.callback_metrics if trainer is not None else {}
    return {
        "status": "interrupted" if isinstance(error, KeyboardInterrupt) else "failed",
        "error": describe_error(error),
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        "params": getattr(model, "num_parameters", None),
        "model": type(model).__name__ if model is not None else None,
        "epochs": trainer.current_epoch if trainer is not None else 0,
        "global_step": trainer.global_step if trainer is not None else 0,
        "wall_time_s": round(wall_time_s, 2),
        "device": device,
        "precision": str(trainer.precision) if trainer is not None else None,
        "seed": cfg.get("seed"),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "best_checkpoint": (checkpoint.best_model_path or None) if checkpoint else None,
        "run_dir": str(cfg.paths.output_dir),
    }


def write_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / METRICS_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def record_failure(cfg: DictConfig, error: BaseException, wall_time_s: float) -> None:
    """Record a failure that happened outside fit/test, unless the callback already did.

    Only rank zero writes: the other processes of a DDP run share its directory.
    """
    run_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0 and not (run_dir / METRICS_FILE).exists():
        write_record(run_dir, failure_record(cfg, error, wall_time_s))


class RecordFailure(Callback):
    """Writes the failure record when ``trainer.fit`` or ``trainer.test`` raises.

    Always installed by ``build_trainer`` (not a ``callbacks/`` option): a failed run without
    a record would look like a run that never happened.
    """

    def __init__(self, cfg: DictConfig, device_name: Callable[[L.Trainer], str]) -> None:
        self.cfg = cfg
        self.device_name = device_name
        self.started = time.perf_counter()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.is_global_zero:
            record = failure_record(
                self.cfg,
                exception,
                time.perf_counter() - self.started,
                trainer,
                self.device_name(trainer),
            )
            write_record(Path(self.cfg.paths.output_dir), record)
