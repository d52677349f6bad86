"""Put the run's config and final metrics into TensorBoard's HPARAMS tab.

Lightning's ``TensorBoardLogger.log_hyperparams(params, metrics)`` also writes every metric
as a scalar at step 0, which would put a bogus point at the start of every curve. The
HPARAMS tab only needs the metric *names*: it reads their values from the run's existing
scalars. So this writes the hparams summary alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch.utils.tensorboard.summary import hparams


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim/lr": 0.1}``; lists and None become strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def log_config_and_metrics(
    loggers: Iterable[Logger], config: Mapping[str, Any], metrics: Mapping[str, float]
) -> None:
    flat = flatten(config)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams(flat, dict(metrics)):
                writer.add_summary(summary)
            writer.flush()
        else:
            logger.log_hyperparams(flat)
