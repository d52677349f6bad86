"""The grid ``cifar-show-aug`` draws (its command line: cifar_lightning/show_aug.py)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from cifar_lightning.errors import ConfigError
from cifar_lightning.run.config import build
from cifar_lightning.training import figures
from cifar_lightning.training.aug_grid import preview


def show_aug(cfg: DictConfig, aug_name: str) -> Path:
    """Draw the grid for ``cfg``'s data and aug; returns the PNG's path."""
    if cfg.images < 1 or cfg.draws < 1:
        raise ConfigError(f"images={cfg.images} and draws={cfg.draws} must both be at least 1.")
    pipeline = build(cfg.aug.pipeline, "aug")
    # batch_size=1: the grid loads no batches, so a small image folder must not fail the
    # DataModule's "at least one full batch" check.
    datamodule = build(cfg.data, "data", aug=pipeline, batch_size=1)
    datamodule.prepare_data()
    datamodule.setup("fit")
    draw = preview(
        datamodule.train_set,
        datamodule.classes,
        pipeline,
        title=f"aug={aug_name}: each training image drawn {cfg.draws} times (seed {cfg.seed})",
        images=cfg.images,
        draws=cfg.draws,
        seed=cfg.seed,
    )
    default = Path(cfg.paths.output_root) / "show_aug" / f"{aug_name}.png"
    return figures.save_png(draw(), Path(cfg.out).expanduser() if cfg.get("out") else default)
