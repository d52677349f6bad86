"""``timing.enabled=true``: time a run the way airbench reports its record times.

airbench times (CUDA events) the data-dependent init, the epochs and the final TTA test, after
an untimed warm-up (:func:`warm_up`) that compiled kernels and tuned cuDNN; :class:`RunClock`
takes the segments. ``cold_start_s`` is the wall time of the whole command."""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from cifar_lightning.run.config import build
from cifar_lightning.run.trainer import SIDE_RUN, make_trainer
from cifar_lightning.run.tune import rng_preserved
from cifar_lightning.training.callbacks import RunClock

log = logging.getLogger(__name__)


def warm_up(cfg: DictConfig, model: L.LightningModule, datamodule: Any) -> float | None:
    """Untimed ``timing.warmup_steps`` + a test pass; model and RNG restored for the timed run."""
    steps = cfg.timing.warmup_steps if cfg.timing.enabled else 0
    if not steps:
        return None
    state, started = copy.deepcopy(model.state_dict()), time.perf_counter()
    with rng_preserved():
        trainer = make_trainer(
            cfg.trainer,
            [build(cfg.speed, "speed")],
            **SIDE_RUN,
            max_steps=steps,
            limit_val_batches=2,
            limit_test_batches=2,
            enable_progress_bar=False,
        )
        trainer.fit(model, datamodule=datamodule)
        trainer.test(model, datamodule=datamodule, verbose=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.load_state_dict(state)
    log.info("Warm-up (%d steps, untimed): %.2f s", steps, seconds)
    return round(seconds, 3)


def report(cfg: DictConfig, trainer: L.Trainer, warmup_s: float | None) -> dict[str, Any] | None:
    """What airbench reports, for ``metrics.json``'s ``timing``; None for an untimed run."""
    clock = next((c for c in trainer.callbacks if isinstance(c, RunClock)), None)
    if clock is None:
        return None
    figures = {**clock.report(), "warmup_s": warmup_s, "cold_start_s": seconds_since_start()}
    log.info("Timing: %s", figures)
    return figures


def seconds_since_start() -> float | None:
    """Wall time since this process started (Linux), or None where /proc is not there."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None
