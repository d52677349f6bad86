"""Reading our checkpoints safely, and rebuilding the model from the checkpoint alone.

``torch.load`` on an untrusted file can run arbitrary code (pickle). We only ever unpickle
with ``weights_only=True`` — tensors and plain data — which is why models keep their
hyper-parameters as plain data. Every training checkpoint also carries a small
``cifar_lightning`` record: the model class and the run's resolved config, so evaluate /
predict need nothing but the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import get_class

from cifar_lightning import __version__
from cifar_lightning.errors import CheckpointError

if TYPE_CHECKING:
    from cifar_lightning.models.base import ImageClassifier

RECORD_KEY = "cifar_lightning"
MODELS_PACKAGE = "cifar_lightning.models."


def make_record(model: torch.nn.Module, run_config: dict[str, Any] | None) -> dict[str, Any]:
    cls = type(model)
    return {
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "version": __version__,
        "config": run_config,
    }


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
    # Only our own model classes: a crafted record must not make us import arbitrary code.
    if not class_path.startswith(MODELS_PACKAGE):
        raise CheckpointError(
            f"{path} names model class {class_path!r}, which is not one of "
            "cifar-lightning's models.",
            fix="pass a cifar-lightning checkpoint",
        )
    try:
        model = get_class(class_path)(**checkpoint.get("hyper_parameters", {}))
        model.load_state_dict(checkpoint["state_dict"])
    except (ImportError, AttributeError, TypeError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} does not fit model {class_path} ({str(e).splitlines()[0]}).",
            fix="use the cifar-lightning version that wrote it, or retrain",
        ) from None
    return model.eval(), record
