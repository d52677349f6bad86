"""``python -m cifar_lightning.evaluate ckpt_path=PATH``: a checkpoint's test results, in full
(PATH a .ckpt file, or a run directory: the checkpoint that run tested).

Needs nothing but the checkpoint: the model comes from its hyper-parameters, the data from its
run config (``data=…`` or ``data.*`` override it). ``trainer.test`` runs with the callback that
draws training's final pictures, so numbers and pictures mean the same in both."""

from __future__ import annotations

import difflib
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from cifar_lightning.atomic import atomic_write
from cifar_lightning.data.batched_aug import Normalize
from cifar_lightning.data.corruptions import NAMES, open_published
from cifar_lightning.data.datamodule import ArrayDataset, eval_transform
from cifar_lightning.errors import ConfigError, DataError, UserError, exit_on_user_error
from cifar_lightning.run import schema
from cifar_lightning.run.checkpoints import load_classifier, tested_checkpoint
from cifar_lightning.run.config import build
from cifar_lightning.run.console import significant
from cifar_lightning.run.record import discard_unused_run_dir
from cifar_lightning.run.trainer import device_name, make_trainer
from cifar_lightning.training.calibration import calibration, fit_temperature, reliability_bins
from cifar_lightning.training.callbacks.progress import ProgressBar
from cifar_lightning.training.figures import publish
from cifar_lightning.training.predictions import Results
from cifar_lightning.training.robustness import corruption_figure, robustness
from cifar_lightning.training.tta import tta_logits

log = logging.getLogger(__name__)

SPLITS = {"test": "test set", "val": "validation split"}
CORRUPTIONS_FIX = "name the folder that holds the CIFAR-10-C .npy files, or drop corruptions.source"
DATAMODULE = "cifar_lightning.data.CIFAR10DataModule"


def data_config(record: dict[str, Any], overrides: DictConfig | None) -> dict[str, Any]:
    """The checkpoint run's data config with every non-null ``data.*`` override applied."""
    data = dict((record.get("config") or {}).get("data") or {})
    raw = OmegaConf.to_container(overrides, resolve=True) if overrides else {}
    given = {k: v for k, v in raw.items() if v is not None}
    if not data and "source" not in given:
        raise ConfigError(
            "the checkpoint does not record which data its run used.",
            fix="name it: data.source=cifar10, data.source=fake, or data.source=imagefolder "
            "data.root=PATH",
        )
    data.update(given)
    data.setdefault("_target_", DATAMODULE)
    # Evaluation never augments; normalization is the model's own, from its checkpoint.
    data.pop("aug", None)
    return data


def build_datamodule(model: Any, record: dict[str, Any], cfg: DictConfig):
    data = data_config(record, cfg.get("data"))
    data["mean"], data["std"] = list(model.hparams.mean), list(model.hparams.std)
    datamodule = build(OmegaConf.create(data), "data")
    data_classes, model_classes = list(datamodule.classes), list(model.hparams.class_names)
    if len(data_classes) != len(model_classes):
        raise ConfigError(
            f"the data has {len(data_classes)} classes ({datamodule.describe()}), the model "
            f"{len(model_classes)}: it was trained on other data.",
            fix="evaluate on the data it was trained on: drop data=…, or name that data",
        )
    if data_classes != model_classes:
        raise ConfigError(
            f"the data's classes {data_classes} are not the model's {model_classes}.",
            fix="evaluate on data with the classes the model was trained on (data.classes)",
        )
    datamodule.prepare_data()
    datamodule.setup("test" if cfg.split == "test" else "validate")
    return datamodule


METRICS = ("acc", "acc_top5", "loss", "ece", "mce", "nll", "brier")
HELD_OUT = 5000  # training images a temperature is fitted on when there is no validation split


def calibrate(model: Any, datamodule: Any, tta: str, device: Any, results: Results) -> dict:
    """Fit a temperature on the validation split (never the test set), then score the test
    logits with it. With ``data.val_size=0`` the last training images stand in, though the
    model has seen them: its confidence there is higher, so T comes out low, erring safe."""
    datamodule.setup("fit")
    if datamodule.val_size > 0:
        loader = datamodule.val_dataloader()
        where = f"the validation split ({datamodule.val_size:,} images)"
    else:
        train = datamodule.train_set
        held = ArrayDataset(train.images, train.labels, eval_transform(datamodule.mean,
                            datamodule.std), train.indices[-HELD_OUT:])  # fmt: skip
        loader = DataLoader(held, batch_size=datamodule.batch_size)
        where = f"the last {len(held):,} training images (data.val_size=0: seen in training)"
        log.warning("calibrate=true with data.val_size=0: fitting on %s.", where)
    logits, targets = [], []
    model.to(device).eval()
    with torch.no_grad():
        for x, y in loader:
            logits.append(tta_logits(model, x.to(device), tta).float().cpu())
            targets.append(y.cpu())
    temperature = fit_temperature(torch.cat(logits), torch.cat(targets))
    after = calibration(results.logits, results.targets, temperature)
    return {"temperature": round(temperature, 4), "fitted_on": where, "after": after}


def check_corruptions(cfg: DictConfig) -> Path | None:
    """Refuse a corruption setting before any work: unknown names, the wrong split, a
    CIFAR-10-C folder with files missing or misshapen. Returns that folder, if one is given."""
    c = cfg.corruptions
    unknown = [n for n in c.names if n not in NAMES]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(
            f"corruptions.names: {unknown[0]!r} is not a CIFAR-10-C corruption{hint}.",
            fix="choose from " + ", ".join(NAMES),
        )
    if cfg.split != "test":
        raise ConfigError(
            "corruptions=true corrupts the test set.", fix="drop split=val (or corruptions=true)"
        )
    if c.source is None:
        return None
    source = Path(str(c.source)).expanduser()
    if not source.is_dir():
        raise DataError(f"corruptions.source={source} is not a folder.", fix=CORRUPTIONS_FIX)
    open_published(source, list(c.names))
    return source


def corruption_robustness(model: Any, datamodule: Any, cfg: DictConfig, source: Path | None,
                          device: torch.device) -> dict[str, Any]:  # fmt: skip
    """The first ``corruptions.images`` test images under every corruption and severity."""
    c, test = cfg.corruptions, datamodule.test_set
    take = test.indices[: c.images] if c.images else test.indices
    images = torch.from_numpy(test.images[take]).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.asarray(test.labels)[take]).long()
    hp, names = model.hparams, list(c.names)
    log.info("Corruptions: %d x %d severities on %s images", len(names), len(c.severities),
             f"{len(images):,}")  # fmt: skip
    model.to(device).eval()
    return robustness(
        model, images, labels, Normalize(hp.mean, hp.std).to(device), names,
        list(c.severities), seed=c.seed, source=source, tta=cfg.test.tta, device=device,
        batch_size=datamodule.batch_size,
    )  # fmt: skip


def print_corruptions(result: dict[str, Any], console: Console) -> None:
    severities = result["severities"]
    table = Table(
        title=f"Accuracy under corruption, {result['images']:,} test images ({result['source']})",
        title_justify="left",
    )
    for i, name in enumerate(["corruption", *(f"s{s}" for s in severities), "mean", "drop"]):
        table.add_column(name, justify="left" if i == 0 else "right")
    clean = result["clean_acc"]
    for name, row in result["acc"].items():
        mean = result["corruption_acc"][name]
        drop = f"{(clean - mean) / clean:.1%}" if clean else "-"
        table.add_row(name, *(f"{a:.1%}" for a in row), f"[bold]{mean:.1%}[/]", drop)
    console.print(table)
    console.print(
        f"[bold]mean corruption accuracy {result['mean_corruption_acc']:.2%}[/] "
        f"(error {result['mean_corruption_error']:.2%}); clean {clean:.2%} on the same images; "
        f"relative drop {result['relative_drop'] or 0:.1%}; "
        + ", ".join(f"{k} {v:.1%}" for k, v in result["family_acc"].items())
        + f" ({result['seconds']:.0f} s)"
    )


WORST = 20  # with more classes than this, the table lists the worst (eval.json has all)


def print_summary(summary: dict[str, Any], results: Results, console: Console) -> None:
    rows, title = results.per_class(), f"Per-class accuracy, {SPLITS[summary['split']]}"
    if len(rows) > WORST:
        rows = sorted(rows, key=lambda r: -1 if r["acc"] is None else r["acc"])[:WORST]
        title += f": the {WORST} worst of {len(results.class_names)} classes (all in eval.json)"
    table = Table(title=title, title_justify="left")
    columns = ("class", "images", "correct", "accuracy", "most often mistaken for")
    for i, name in enumerate(columns):
        table.add_column(name, justify="right" if 0 < i < 4 else "left")
    for row in rows:
        acc, confused = row["acc"], "-"
        style = "green" if acc is not None and acc >= results.accuracy else "red"
        if row["most_confused_with"]:
            confused = f"{row['most_confused_with']} ({row['most_confused_share']:.1%})"
        accuracy = f"[{style}]{acc:.1%}[/]" if acc is not None else "-"
        table.add_row(row["class"], f"{row['images']:,}", f"{row['correct']:,}", accuracy, confused)
    console.print(table)
    m = summary["metrics"]
    loss = significant(m["loss"])
    console.print(
        f"[bold]top-1 {m['acc']:.2%}[/]   top-5 {m['acc_top5']:.2%}   loss {loss}   "
        f"({summary['num_images']:,} images, {summary['data']})"
    )
    c = summary["calibration"]
    line = f"calibration: ECE {c['ece']:.2%}, MCE {c['mce']:.2%}, NLL {significant(c['nll'])}, "
    line += f"Brier {significant(c['brier'])}"
    if "temperature" in c:
        a = c["after"]
        t, nll, brier = (significant(x) for x in (c["temperature"], a["nll"], a["brier"]))
        line += (f"; with temperature {t} (fitted on {c['fitted_on']}): "
                 f"ECE {a['ece']:.2%}, NLL {nll}, Brier {brier}")  # fmt: skip
    console.print(line)
    if "corruptions" in summary:
        print_corruptions(summary["corruptions"], console)
    files = ", ".join(summary["files"].values())
    console.print(f"Written to {summary['run_dir']}: eval.json, {files}")


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
    source = check_corruptions(cfg) if cfg.corruptions.enabled else None
    output_dir, split = Path(cfg.paths.output_dir), SPLITS[cfg.split]
    ckpt_path = tested_checkpoint(str(cfg.ckpt_path)).resolve()
    model, record = load_classifier(ckpt_path)
    model.test_tta = cfg.test.tta
    datamodule = build_datamodule(model, record, cfg)
    if cfg.calibrate and cfg.split != "test":
        raise ConfigError(
            "calibrate=true fits on the validation split and reports on the test set.",
            fix="drop split=val (or calibrate=true)",
        )
    if cfg.split == "val" and datamodule.val_size == 0:
        log.warning("data.val_size=0: the run validated on the test set, so val = test here.")
    pictures = build(cfg.figures, "figures", split_name=split)
    loggers = [build(c, "logger") for c in cfg.logger.values() if c]
    bar = [ProgressBar()] if cfg.trainer.enable_progress_bar else []
    trainer = make_trainer(
        cfg.trainer, [*bar, pictures], loggers or False, output_dir, enable_checkpointing=False
    )
    log.info("Evaluating %s on the %s of %s", ckpt_path, split, datamodule.describe())
    # Attached before the loader is made: data.loader=device then cuts, augments and
    # normalizes the batches on the Trainer's device, not on the CPU.
    datamodule.trainer = trainer
    loader = datamodule.test_dataloader() if cfg.split == "test" else datamodule.val_dataloader()
    (metrics,) = trainer.test(model, dataloaders=loader, verbose=False)
    if (results := pictures.results) is None or not results.num_images:
        raise UserError(f"the {split} holds no images.", fix="check data.*")
    calibrated = calibration(results.logits, results.targets)
    calibrated["bins"] = reliability_bins(results.logits, results.targets)
    if cfg.calibrate:
        device = trainer.strategy.root_device
        calibrated.update(calibrate(model, datamodule, cfg.test.tta, device, results))
    extra: dict[str, Any] = {}
    if cfg.corruptions.enabled:
        device = trainer.strategy.root_device
        extra["corruptions"] = corruption_robustness(model, datamodule, cfg, source, device)
        title = f"{type(model).__name__} under CIFAR-10-C corruptions"
        png = output_dir / "corruptions.png"
        if trainer.is_global_zero:
            draw = functools.partial(corruption_figure, extra["corruptions"], title)
            publish(draw, png, trainer.loggers, "test/corruptions")
        pictures.files["corruptions"] = png
    summary = {
        "checkpoint": str(ckpt_path),
        "split": cfg.split,
        "data": datamodule.describe(),
        "num_images": results.num_images,
        "tta": cfg.test.tta,
        "metrics": {k: float(metrics[f"test/{k}"]) for k in METRICS},
        "calibration": calibrated,
        **extra,
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
        atomic_write(output_dir / "eval.json", (json.dumps(summary, indent=2) + "\n").encode())
        print_summary(summary, results, console or Console())
    return summary


def run(cfg: DictConfig) -> None:
    """``cifar-evaluate`` with its composed config (cifar_lightning/evaluate.py): one message
    for a UserError, and no run dir left behind by a rejected evaluation."""
    with exit_on_user_error():
        try:
            evaluate(cfg)
        except UserError:
            discard_unused_run_dir(cfg)
            raise
