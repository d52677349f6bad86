"""``python -m cifar_lightning.evaluate ckpt_path=PATH``: a checkpoint's test results, in full.

Needs nothing but the checkpoint: the model comes back from its saved hyper-parameters and the
data pipeline from the run config it carries (any ``data.*`` key can be overridden). The test
pass is Lightning's own ``trainer.test`` with the same :class:`EvaluationFigures` callback
that runs at the end of training, so the numbers and pictures mean the same thing in both.
Writes ``eval.json``, the PNGs and TensorBoard events into its own run dir.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cifar_lightning.errors import ConfigError, UserError, exit_on_user_error
from cifar_lightning.run import log_filters, schema
from cifar_lightning.run.checkpoints import load_classifier
from cifar_lightning.run.config import CONFIG_DIR, build, run_hydra
from cifar_lightning.run.record import discard_unused_run_dir
from cifar_lightning.run.trainer import device_name, make_trainer
from cifar_lightning.training.callbacks.run_pictures import EvaluationFigures
from cifar_lightning.training.evaluation import Results

log = logging.getLogger(__name__)


SPLITS = {"test": "test set", "val": "validation split"}
DATAMODULE = "cifar_lightning.data.CIFAR10DataModule"


def data_config(record: dict[str, Any], overrides: DictConfig | None) -> dict[str, Any]:
    """The checkpoint run's data config with every non-null ``data.*`` override applied."""
    run_config = record.get("config") or {}
    data = dict(run_config.get("data") or {})
    given = {
        k: v
        for k, v in (OmegaConf.to_container(overrides, resolve=True) if overrides else {}).items()
        if v is not None
    }
    if not data and "source" not in given:
        raise ConfigError(
            "the checkpoint does not record which data its run used.",
            fix="name it: data.source=cifar10, data.source=fake, or data.source=imagefolder "
            "data.root=PATH",
        )
    data.update(given)
    data.setdefault("_target_", DATAMODULE)
    # Augmentation never applies to evaluation, and the model's normalization is part of the
    # model: it comes from the checkpoint, not from the data config.
    data.pop("aug", None)
    return data


def build_datamodule(model: Any, record: dict[str, Any], cfg: DictConfig):
    data = data_config(record, cfg.get("data"))
    data["mean"], data["std"] = list(model.hparams.mean), list(model.hparams.std)
    datamodule = build(OmegaConf.create(data), "data")
    if list(datamodule.classes) != list(model.hparams.class_names):
        raise ConfigError(
            f"the data's classes {list(datamodule.classes)} are not the model's "
            f"{list(model.hparams.class_names)}.",
            fix="evaluate on data with the classes the model was trained on (data.classes)",
        )
    datamodule.prepare_data()
    datamodule.setup("test" if cfg.get("split", "test") == "test" else "validate")
    return datamodule


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list) -> L.Trainer:
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks = [RichProgressBar(), *callbacks]
    logger = TensorBoardLogger(
        save_dir=str(output_dir), name="tensorboard", version="", default_hp_metric=False
    )
    return make_trainer(
        cfg.trainer,
        callbacks,
        logger,
        output_dir,
        enable_checkpointing=False,
        enable_model_summary=False,
    )


def print_summary(summary: dict[str, Any], results: Results, console: Console) -> None:
    table = Table(title=f"Per-class accuracy, {SPLITS[summary['split']]}", title_justify="left")
    for name, justify in (
        ("class", "left"),
        ("images", "right"),
        ("correct", "right"),
        ("accuracy", "right"),
        ("most often mistaken for", "left"),
    ):
        table.add_column(name, justify=justify)
    for row in results.per_class():
        acc = row["acc"]
        style = "green" if acc is not None and acc >= results.accuracy else "red"
        confused = (
            f"{row['most_confused_with']} ({row['most_confused_share']:.1%})"
            if row["most_confused_with"]
            else "-"
        )
        table.add_row(
            row["class"],
            f"{row['images']:,}",
            f"{row['correct']:,}",
            f"[{style}]{acc:.1%}[/]" if acc is not None else "-",
            confused,
        )
    console.print(table)
    m = summary["metrics"]
    console.print(
        f"[bold]top-1 {m['acc']:.2%}[/]   top-5 {m['acc_top5']:.2%}   loss {m['loss']:.4f}   "
        f"({summary['num_images']:,} images, {summary['data']})"
    )
    console.print(
        f"Written to {summary['run_dir']}: eval.json, {', '.join(summary['files'].values())}"
    )


def evaluate(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Test a checkpoint; writes and returns the summary that goes into ``eval.json``."""
    started = time.perf_counter()
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "no checkpoint given.",
            fix="python -m cifar_lightning.evaluate "
            "ckpt_path=outputs/<date>/<time>/checkpoints/last.ckpt",
        )
    schema.validate(cfg)
    split = cfg.get("split", "test")
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not a split.", fix="use split=test or split=val")
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser().resolve()

    model, record = load_classifier(ckpt_path)
    tta = cfg.test.tta
    model.test_tta = tta
    datamodule = build_datamodule(model, record, cfg)
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    if split == "val" and datamodule.val_size == 0:
        log.warning("data.val_size=0: the run validated on the test set, so val = test here.")

    fig_cfg = cfg.get("figures") or {}
    pictures = EvaluationFigures(
        dirpath=output_dir,
        sample_size=fig_cfg.get("sample_size", 64),
        mistakes_size=fig_cfg.get("mistakes_size", 32),
        seed=fig_cfg.get("seed", 0),
        val_every_n_epochs=0,
        split_name=SPLITS[split],
    )
    trainer = build_trainer(cfg, output_dir, [pictures])
    log.info("Evaluating %s on the %s of %s", ckpt_path, SPLITS[split], datamodule.describe())
    (metrics,) = trainer.test(model, dataloaders=loader, verbose=False)
    results = pictures.results
    if results is None or not results.num_images:
        raise UserError(f"the {SPLITS[split]} holds no images.", fix="check data.*")

    summary = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "data": datamodule.describe(),
        "num_images": results.num_images,
        "tta": tta,
        "metrics": {
            "acc": float(metrics["test/acc"]),
            "acc_top5": float(metrics["test/acc_top5"]),
            "loss": float(metrics["test/loss"]),
        },
        "per_class": results.per_class(),
        "classes": results.class_names,
        "confusion_matrix": results.confusion.tolist(),
        "files": {name: path.name for name, path in pictures.files.items()},
        "model": type(model).__name__,
        "params": model.num_parameters,
        "device": device_name(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "run_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        (output_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_summary(summary, results, console or Console())
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        try:
            evaluate(cfg)
        except UserError:
            discard_unused_run_dir(cfg)
            raise


def main() -> None:
    """``python -m cifar_lightning.evaluate`` / ``cifar-evaluate``."""
    log_filters.install()
    run_hydra(hydra_main, "evaluate")
