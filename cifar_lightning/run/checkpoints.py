"""Reading our checkpoints safely, and rebuilding the model from the checkpoint alone.

Unpickling can run arbitrary code, so we load ``weights_only=True`` only (hence plain-data
hparams); a ``cifar_lightning`` record (model class, resolved config) is all evaluate/predict need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from cifar_lightning import __version__
from cifar_lightning.atomic import atomic_write
from cifar_lightning.errors import CheckpointError
from cifar_lightning.training.classifier import ImageClassifier

log = logging.getLogger(__name__)

MODELS_PACKAGE = "cifar_lightning.training."
RECORD_KEY = "cifar_lightning"


def _class_path(model: torch.nn.Module) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"


def make_record(model: torch.nn.Module, run_config: dict[str, Any] | None) -> dict[str, Any]:
    return {"model_class": _class_path(model), "version": __version__, "config": run_config}


class CheckpointRecord(Callback):
    """Adds the record (model class, the run's resolved config) to every checkpoint saved."""

    def __init__(self, run_config: dict[str, Any]) -> None:
        self.run_config = run_config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = make_record(pl_module, self.run_config)


def tested_checkpoint(path: str | Path) -> Path:
    """``path`` itself, or for a run directory the checkpoint its test used (``tested`` in its
    metrics.json: the best, else the last), looked up beside it so a moved run still works."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    record: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((path / "metrics.json").read_text())
    best = record.get("best_checkpoint")
    chosen = path / "checkpoints" / "last.ckpt"
    if record.get("tested") == "best" and best:
        chosen = path / "checkpoints" / Path(best).name
    if not chosen.is_file():
        raise CheckpointError(
            f"run directory {path} holds no {chosen.relative_to(path)}.",
            fix="pass a .ckpt file, or the directory of a run that saved its checkpoints",
        )
    log.info("%s: the checkpoint its test used, %s", path, chosen.name)
    return chosen


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, unpickled weights-only; a clear error for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist.",
            fix="pass the path of a .ckpt file, e.g. outputs/<date>/<time>/checkpoints/last.ckpt",
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path} contains Python objects other than tensors and plain data; refusing "
                "to unpickle it, since that could run arbitrary code.",
                fix="load only checkpoints written by cifar-lightning, from a source you trust",
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({e}).", fix="use another checkpoint file"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({str(e).splitlines()[0]}).",
            fix="use another checkpoint of the run (last.ckpt or the best one), or retrain",
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no state_dict).",
            fix="pass a .ckpt file written by cifar-lightning's training",
        )
    if RECORD_KEY not in checkpoint:
        raise CheckpointError(
            f"{path} was not written by cifar-lightning (no '{RECORD_KEY}' record), so the "
            "model it belongs to is unknown.",
            fix="pass a checkpoint from a cifar-lightning run (outputs/…/checkpoints/*.ckpt)",
        )
    return checkpoint


def load_classifier(path: str | Path) -> tuple[ImageClassifier, dict[str, Any]]:
    """The model of a checkpoint, in eval mode on the CPU, and the checkpoint's record."""
    checkpoint = read_checkpoint(path)
    record = checkpoint[RECORD_KEY]
    class_path = str(record.get("model_class", ""))
    # Only our own LightningModules (whose net must be an nn.Module class, checked before it
    # is built): a crafted record must not make us import or call arbitrary code.
    if not class_path.startswith(MODELS_PACKAGE):
        raise CheckpointError(
            f"{path} names model class {class_path!r}, which is not one of "
            f"cifar-lightning {__version__}'s models.",
            fix="pass a cifar-lightning checkpoint (one from before 0.2, when the models lived in "
            "cifar_lightning.models, needs the version that wrote it)",
        )
    try:
        cls = get_class(class_path)
        if not (isinstance(cls, type) and issubclass(cls, ImageClassifier)):
            raise TypeError(f"{class_path} is not an ImageClassifier")
        model = cls(**checkpoint.get("hyper_parameters", {}))
        model.load_state_dict(checkpoint["state_dict"])  # with ema.enabled: the EMA weights
    except (ImportError, AttributeError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{path} does not fit model {class_path} ({str(e).splitlines()[0]}).",
            fix="use the cifar-lightning version that wrote it, or retrain",
        ) from None
    if "current_model_state" in checkpoint:  # saved by training/callbacks/ema.py
        log.info("%s holds the EMA of the weights (ema.enabled=true): using those.", path)
    return model.eval(), record


def check_resumable(checkpoint: dict[str, Any], path: str | Path, model: torch.nn.Module) -> None:
    """Refuse a checkpoint that cannot resume ``model``, before ``fit`` fails with a KeyError."""
    theirs, ours = checkpoint[RECORD_KEY].get("model_class"), _class_path(model)
    if theirs != ours:
        raise CheckpointError(
            f"{path} belongs to model {theirs!r}; this run builds {ours}.",
            fix="resume with the model (and config) the checkpoint was trained with",
        )
    keys = ("optimizer_states", "loops", "epoch", "global_step")
    if missing := [k for k in keys if k not in checkpoint]:
        raise CheckpointError(
            f"{path} holds weights only (no {', '.join(missing)}), so training cannot "
            "continue from it.",
            fix="resume from a training checkpoint such as the run's checkpoints/last.ckpt",
        )
    expected, state = model.state_dict(), checkpoint["state_dict"]
    wrong = sorted(set(expected) ^ set(state))
    wrong += [k for k in expected if k in state and expected[k].shape != state[k].shape]
    if wrong:
        key = wrong[0]
        detail = (
            f"{key}: {tuple(state[key].shape)} in the checkpoint, {tuple(expected[key].shape)} "
            "in this model"
            if key in state and key in expected
            else f"{key} is {'missing from' if key in expected else 'extra in'} the checkpoint"
        )
        raise CheckpointError(
            f"{path} does not fit this run's model ({len(wrong)} mismatched tensors, e.g. "
            f"{detail}).",
            fix="resume with the config the checkpoint was trained with (its run's "
            ".hydra/config.yaml), or start a new run without ckpt_path",
        )


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made crash-safe and weights-only. Lightning's temp file sits in
    /tmp: on a tmpfs the final move is a copy that a crash truncates; ours sits beside the target
    and replaces it atomically. Loads go through :func:`read_checkpoint`, for its clear errors."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed save
            stale.unlink(missing_ok=True)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, weights_only=True)
        return read_checkpoint(path)
