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
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from cifar_lightning.errors import TrainingDiverged

METRICS_FILE = "metrics.json"


def describe_error(error: BaseException) -> str:
    """``"ZeroDivisionError: integer modulo by zero"``: the type says as much as the text."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# Keys only some runs fill (a completed run: which weights were tested; a run with an LR
# range test: its suggestion; a timed run: its timing): present, as null, in every record so
# all records share a schema.
OPTIONAL_KEYS = ("tested", "lr_find", "timing")


def build_record(
    cfg: DictConfig,
    status: str,
    metrics: Mapping[str, Any],
    wall_time_s: float,
    trainer: L.Trainer | None = None,
    device: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A run's ``metrics.json``, whatever its status: one schema for every record."""
    model = trainer.lightning_module if trainer is not None else None
    checkpoint = trainer.checkpoint_callback if trainer is not None else None
    best = checkpoint.best_model_path if checkpoint is not None else ""
    values = {k: float(v) for k, v in sorted(metrics.items())}
    return {
        "status": status,
        # NaN is not JSON: a diverged run reports its non-finite values as null.
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
        "params": getattr(model, "num_parameters", None),
        "model": type(model).__name__ if model is not None else None,
        "epochs": trainer.current_epoch if trainer is not None else 0,
        "global_step": trainer.global_step if trainer is not None else 0,
        "wall_time_s": round(wall_time_s, 2),
        "device": device,
        "precision": str(trainer.precision) if trainer is not None else None,
        "seed": cfg.get("seed"),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "best_checkpoint": best if best and Path(best).is_file() else None,
        "run_dir": str(cfg.paths.output_dir),
        **dict.fromkeys(OPTIONAL_KEYS),
        **extra,
    }


def failure_record(
    cfg: DictConfig,
    error: BaseException,
    wall_time_s: float,
    trainer: L.Trainer | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The keys of a completed run's record, filled as far as the run got, plus ``error``."""
    status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
    metrics = trainer.callback_metrics if trainer is not None else {}
    return build_record(
        cfg, status, metrics, wall_time_s, trainer, device, error=describe_error(error)
    )


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
        # A diverged or interrupted run is recorded by train() itself, with its own status.
        if isinstance(exception, TrainingDiverged | SIGTERMException):
            return
        if trainer.is_global_zero:
            record = failure_record(
                self.cfg,
                exception,
                time.perf_counter() - self.started,
                trainer,
                self.device_name(trainer),
            )
            write_record(Path(self.cfg.paths.output_dir), record)
