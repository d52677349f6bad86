"""``python -m cifar_lightning.export ckpt_path=PATH format=onnx|torch_export``: a checkpoint's
model for use outside this project, its normalization baked in, checked before it is kept.

The exported model takes float32 RGB images in [0, 1], shape (N, 3, 32, 32), any N, and
returns logits (N, K). ``onnx``: opset 18 from torch's dynamo exporter, with the class names in
the file's metadata (``predict ckpt_path=model.onnx`` reads them); ``torch_export``: a ``.pt2``
program (``torch.export.load(path).module()``). Either is written only once the exported model,
run on 256 test images (onnxruntime for ONNX), gives logits within ``tolerance`` of the
checkpoint's model and the same top-1 for every image; ``export.json`` says what was checked.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from cifar_lightning.atomic import atomic_write
from cifar_lightning.data.batched_aug import Normalize
from cifar_lightning.errors import CheckpointError, ConfigError, UserError, exit_on_user_error
from cifar_lightning.run.checkpoints import load_classifier, tested_checkpoint
from cifar_lightning.run.evaluate import build_datamodule
from cifar_lightning.run.record import discard_unused_run_dir

log = logging.getLogger(__name__)

FILES = {"onnx": "model.onnx", "torch_export": "model.pt2"}
OPSET = 18
NEEDS = "pip install 'cifar-lightning[export]' (onnx, onnxscript, onnxruntime)"


class Normalized(nn.Module):
    """The net behind its own normalization: [0, 1] images in, logits out."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "format=onnx needs onnx, onnxscript and onnxruntime.", fix=NEEDS
        ) from None
    return onnx, onnxruntime


def write_onnx(model: Normalized, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    onnx, _ = _onnx_modules()
    for name in ("onnxscript", "onnx_ir"):  # their INFO lines narrate every optimizer pass
        logging.getLogger(name).setLevel(logging.WARNING)
    batch = torch.export.Dim("batch", min=1, max=65536)
    torch.onnx.export(
        model, (example,), str(path), dynamo=True, opset_version=OPSET,
        input_names=["images"], output_names=["logits"],
        dynamic_shapes={"images": {0: batch}}, external_data=False, verbose=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


class OnnxClassifier:
    """An exported ``.onnx`` file where ``predict`` expects a classifier: the class names from
    its metadata, normalization inside (so ``hparams`` asks only for /255)."""

    def __init__(self, path: str | Path) -> None:
        onnx, onnxruntime = _onnx_modules()
        fix = "export it (again) with python -m cifar_lightning.export"
        try:
            meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
            providers = ["CPUExecutionProvider"]
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable ONNX model ({e}).", fix=fix) from None
        if "class_names" not in meta:
            raise CheckpointError(f"{path} names no classes (not our export).", fix=fix)
        names = json.loads(meta["class_names"])
        self.hparams = SimpleNamespace(class_names=names, mean=[0.0] * 3, std=[1.0] * 3)

    def to(self, device: torch.device) -> OnnxClassifier:
        return self

    def eval(self) -> OnnxClassifier:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        inputs = {"images": images.detach().float().cpu().numpy()}
        return torch.from_numpy(self.session.run(None, inputs)[0])


def write(fmt: str, model: Normalized, example: torch.Tensor, path: Path, meta: dict) -> None:
    if fmt == "onnx":
        write_onnx(model, example, path, meta)
    else:
        batch = {"images": {0: torch.export.Dim("batch", min=1, max=65536)}}
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=batch), str(path))


def run_exported(fmt: str, path: Path, images: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        return OnnxClassifier(path)(images).numpy()
    with torch.no_grad():
        return torch.export.load(str(path)).module()(images).numpy()


def target_path(cfg: DictConfig) -> Path:
    """Where the file goes, refused now if its folder cannot be written."""
    fmt = str(cfg.format)
    if fmt not in FILES:
        raise ConfigError(
            f"format={fmt!r} is not an export format.", fix="use format=onnx or format=torch_export"
        )
    if not cfg.get("ckpt_path"):
        fix = "python -m cifar_lightning.export ckpt_path=outputs/<date>/<time>"
        raise ConfigError("no checkpoint given.", fix=fix)
    out = cfg.get("out")
    path = Path(str(out)).expanduser() if out else Path(cfg.paths.output_dir) / FILES[fmt]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise PermissionError(f"{path.parent} is not writable")
    except OSError as e:
        raise ConfigError(f"cannot write {path} ({e}).", fix="choose out=FILE elsewhere") from None
    return path


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, check on the test set, keep only what passed; returns ``export.json``."""
    fmt, path = str(cfg.format), target_path(cfg)
    ckpt = tested_checkpoint(str(cfg.ckpt_path)).resolve()
    model, record = load_classifier(ckpt)
    test, hp = build_datamodule(model, record, cfg).test_set, model.hparams
    pixels = torch.from_numpy(test.images[test.indices[: cfg.check_images]]).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = model(Normalize(hp.mean, hp.std)(pixels)).numpy()
    wrapped, images = Normalized(model.net, list(hp.mean), list(hp.std)).eval(), pixels / 255
    meta = {
        "class_names": json.dumps(list(hp.class_names)),
        "input": "float32 RGB in [0, 1], (N, 3, 32, 32)",
        "checkpoint": str(ckpt),
    }
    scratch = path.with_name(f".{path.stem}.partial{path.suffix}")  # renamed once checked
    try:
        write(fmt, wrapped, images[:2], scratch, meta)
        got = run_exported(fmt, scratch, images)
        diff = float(np.abs(got - expected).max())
        agree = float((got.argmax(1) == expected.argmax(1)).mean())
        if not (diff <= cfg.tolerance and agree == 1.0):
            raise UserError(
                f"the exported model does not match the checkpoint's on {len(images)} test "
                f"images (largest logit difference {diff:.2e}, tolerance {cfg.tolerance}; top-1 "
                f"agreement {agree:.2%}); nothing was written.",
                fix="report it with the checkpoint; the other format may pass meanwhile",
            )
        os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    summary = {
        "file": str(path), "format": fmt, "opset": OPSET if fmt == "onnx" else None,
        "checkpoint": str(ckpt), "input": meta["input"], "output": "logits (N, K)",
        "classes": list(hp.class_names), "checked_images": len(images),
        "max_logit_difference": diff, "top1_agreement": agree, "tolerance": cfg.tolerance,
    }  # fmt: skip
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(Path(cfg.paths.output_dir) / "export.json", text.encode())
    print(
        f"Exported {ckpt.name} to {path} ({fmt}). Checked on {len(images)} test images: largest "
        f"logit difference {diff:.2e} (tolerance {cfg.tolerance}), top-1 agreement {agree:.0%}."
    )
    return summary


def run(cfg: DictConfig) -> None:
    """``cifar-export`` with its composed config (cifar_lightning/export.py): one message for
    a UserError, and no run dir left behind by a rejected export."""
    with exit_on_user_error():
        try:
            export(cfg)
        except UserError:
            discard_unused_run_dir(cfg)
            raise
