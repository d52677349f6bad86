"""The loggers of ``conf/logger/``: Lightning's TensorBoard, CSV and MLflow loggers, each told
what a person comparing runs wants to see first.

Lightning adds an ``epoch`` value to every metrics dict it hands its loggers; as a chart it says
nothing (a staircase), so TensorBoard and MLflow get the metrics without it (the CSV keeps it as
a column, where it is the x-axis a spreadsheet wants). TensorBoard also gets a CUSTOM SCALARS
layout that opens on ``train/loss``, ``train/acc``, ``train/lr``, ``val/loss``, ``val/acc``: its
SCALARS and TIME SERIES tabs sort tag groups alphabetically, ``test`` before ``train``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as _MLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from cifar_lightning.errors import ConfigError

# Lightning's per-log ``epoch`` (trainer/connectors/logger_connector: ``setdefault("epoch")``).
EPOCH_KEY = "epoch"
# What a run is judged by, in the order a person reads it: the CUSTOM SCALARS tab's first
# category, one chart each.
FIRST_CHARTS = ("train/loss", "train/acc", "train/lr", "val/loss", "val/acc")
FINAL_CHARTS = ("test/acc", "test/loss", "val/acc_best")


def without_epoch(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != EPOCH_KEY}


def scalars_layout() -> dict[str, dict[str, list]]:
    """The CUSTOM SCALARS tab (``SummaryWriter.add_custom_scalars``'s form): the training
    curves first, then the final numbers; each chart one tag, matched exactly."""
    return {
        title: {tag: ["Multiline", [f"^{tag}$"]] for tag in tags}
        for title, tags in (("training", FIRST_CHARTS), ("results", FINAL_CHARTS))
    }


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoardLogger without the ``epoch`` chart, with the custom-scalars
    layout written with the first metrics (so it is there while the run trains)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._layout_written = False

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._layout_written:
            self.experiment.add_custom_scalars(scalars_layout())
            self._layout_written = True
        super().log_metrics(without_epoch(metrics), step)


def mlflow_installed() -> bool:
    return importlib.util.find_spec("mlflow") is not None


class MLFlowLogger(_MLFlowLogger):
    """Lightning's MLFlowLogger without the ``epoch`` chart; a missing MLflow is one message.

    ``artifact_location`` is made absolute: MLflow would keep a relative path as given and
    resolve it against wherever the UI later runs."""

    def __init__(self, *args: Any, artifact_location: str | None = None, **kwargs: Any) -> None:
        if not mlflow_installed():
            raise ConfigError(
                "logger=mlflow needs MLflow, which is not installed.",
                fix="pip install 'cifar-lightning[mlflow]' (or pip install mlflow), or pick "
                "another logger: logger=tensorboard, logger=csv",
            )
        if artifact_location and "://" not in artifact_location:
            artifact_location = Path(artifact_location).resolve().as_uri()
        super().__init__(*args, artifact_location=artifact_location, **kwargs)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(without_epoch(metrics), step)

    @rank_zero_only
    def log_text(self, text: str, artifact_file: str) -> None:
        """A text file among the run's artifacts (the full config)."""
        self.experiment.log_text(self.run_id, text, artifact_file)


# The final metrics that become HPARAMS' metric columns (and MLflow's, CSV's final row), in
# the order they are read; a run without a test leaves those out.
FINAL_METRICS = (
    "test/acc", "test/acc_top5", "test/loss", "test/ece",
    "val/acc", "val/acc_best", "val/loss", "train/loss_epoch", "train/acc",
)  # fmt: skip


def _last_name(target: Any) -> str | None:
    """``torch.optim.SGD`` -> ``SGD``."""
    return str(target).rsplit(".", 1)[-1] if target else None


def curated_hparams(config: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters a person compares runs by, readable (``model: depthwise``, not
    ``model/_target_``), from the resolved config and the run's record; the full config goes
    beside them as text. Unset values are left out (HPARAMS would show them as "None")."""
    from cifar_lightning.run.config import chosen_option, run_label

    optim, sched = config.get("optim") or {}, config.get("sched") or {}
    data, trainer = config.get("data") or {}, config.get("trainer") or {}
    loss, mix, ema = config.get("loss") or {}, config.get("mix") or {}, config.get("ema") or {}
    source = str(data.get("source", ""))
    if source == "imagefolder" and data.get("root"):
        source = f"imagefolder: {Path(str(data['root'])).name}"
    steps = trainer.get("limit_train_batches")
    scheduler = sched.get("scheduler") or {}
    max_epochs = trainer.get("max_epochs") or -1
    run_dir, task = str((config.get("paths") or {}).get("output_dir", "")), config.get("task_name")
    params: dict[str, Any] = {
        "model": chosen_option("model") or record.get("model"),
        "experiment": chosen_option("experiment") or "none",
        "params": record.get("params"),
        "optimizer": _last_name(optim.get("_target_")),
        "lr": optim.get("lr"),
        "weight_decay": optim.get("weight_decay", 0.0),
        "momentum": optim.get("momentum"),
        "batch_size": data.get("batch_size"),
        "epochs": max_epochs if max_epochs > 0 else record.get("epochs"),
        "steps_per_epoch": record.get("steps_per_epoch") or steps,
        "schedule": chosen_option("sched") or _last_name(scheduler.get("_target_")) or "none",
        "aug": chosen_option("aug"),
        "label_smoothing": loss.get("label_smoothing", 0.0),
        "mix": mix.get("mode", "none"),
        "ema": ema.get("decay") if ema.get("enabled") else "off",
        "seed": config.get("seed"),
        "precision": record.get("precision") or trainer.get("precision"),
        "data": source,
        "run": run_label(run_dir, task or "train"),
        "status": record.get("status"),
    }
    plain = (bool, int, float, str)
    return {k: v if isinstance(v, plain) else str(v) for k, v in params.items() if v is not None}


def final_metrics(metrics: Mapping[str, float | None]) -> dict[str, float]:
    """``FINAL_METRICS`` the run has, in that order."""
    return {k: float(metrics[k]) for k in FINAL_METRICS if metrics.get(k) is not None}


def config_text(config: Mapping[str, Any]) -> str:
    """The full resolved config as a markdown yaml block (TensorBoard's TEXT tab renders it)."""
    from omegaconf import OmegaConf

    return "```yaml\n" + OmegaConf.to_yaml(OmegaConf.create(dict(config))) + "```\n"


def log_hparams(
    loggers: list, config: Mapping[str, Any], record: Mapping[str, Any]
) -> dict[str, Any]:
    """The curated hyper-parameters beside the final metrics, for every logger; returns them.

    TensorBoard: HPARAMS (see :func:`hparams_summaries`), the full config in TEXT as
    ``config``. CSV: ``hparams.yaml``. MLflow: params, and the config as ``config.yaml``."""
    from omegaconf import OmegaConf

    params = curated_hparams(config, record)
    metrics = final_metrics(record.get("metrics") or {})
    for logger in loggers:
        if isinstance(logger, _TensorBoardLogger):
            from tensorboard.plugins.text.summary_v2 import text_pb

            writer = logger.experiment._get_file_writer()
            for summary in hparams_summaries(params, metrics, record.get("status")):
                writer.add_summary(summary)
            writer.add_summary(text_pb("config", config_text(config)))  # the tag as named
            writer.flush()
        else:
            logger.log_hyperparams(params)
            if isinstance(logger, MLFlowLogger):
                logger.log_text(OmegaConf.to_yaml(OmegaConf.create(dict(config))), "config.yaml")
            logger.save()
    return params


def hparams_summaries(
    params: Mapping[str, Any], metrics: Mapping[str, float], status: str | None
) -> list[Any]:
    """HPARAMS' three records, with TensorBoard's own API (its ``summary_v2`` protos).

    TensorBoard sorts the columns by name and shows the first five, so each name carries its
    rank (``03 params``) and shows as its display name (``params``): the table opens on model,
    experiment, params, optimizer, lr. The metric columns read each tag's last logged value.
    Not Lightning's ``log_hyperparams(params, metrics)``: it logs each metric at step 0 too."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    ranked = {
        hp.HParam(f"{i:02d} {k}", display_name=k): v for i, (k, v) in enumerate(params.items(), 1)
    }
    columns = [hp.Metric(tag, display_name=tag) for tag in metrics]
    from tensorboard.compat.proto.summary_pb2 import Summary

    ok = api_pb2.STATUS_SUCCESS if status == "completed" else api_pb2.STATUS_FAILURE
    end = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=ok),
        version=metadata.PLUGIN_DATA_VERSION,
    )
    meta, null = metadata.create_summary_metadata(end), metadata.NULL_TENSOR
    return [
        hp.hparams_config_pb(list(ranked), columns),
        hp.hparams_pb(ranked, trial_id=params.get("run")),
        Summary(
            value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, metadata=meta, tensor=null)]
        ),
    ]


def events_dir(run_dir: str | Path) -> Path:
    """Where a run dir's TensorBoard events are: ``tensorboard/<run name>/``, or
    ``tensorboard/`` itself in runs made before runs had names."""
    root = Path(run_dir) / "tensorboard"
    named = sorted(p.parent for p in root.glob("*/events.out.tfevents.*"))
    return named[0] if named else root
