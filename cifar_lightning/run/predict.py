"""``python -m cifar_lightning.predict ckpt_path=PATH images=[cat.jpg,photos/]``: classify photos.

Any image (phone photo, transparent PNG, greyscale scan) is made 32x32 RGB (cropped or stretched)
and normalized as in training. Unreadable files get an error line (exit code 1); the rest still run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps, UnidentifiedImageError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cifar_lightning.data.batched_aug import Normalize
from cifar_lightning.data.imagefolder import IMAGE_SUFFIXES
from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.checkpoints import load_classifier, tested_checkpoint
from cifar_lightning.run.checks import check_prediction
from cifar_lightning.run.export import OnnxClassifier
from cifar_lightning.run.trainer import pick_device
from cifar_lightning.training import figures
from cifar_lightning.training.classifier import ImageClassifier

SIZE = 32
UNREADABLE = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError)


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None = None
    error: str | None = None
    image: np.ndarray | None = None  # (32, 32, 3) uint8: what the model saw

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = [{"class": c, "probability": round(p, 6)} for c, p in self.top or []]
        return {"path": self.path, "top": top}


def find_images(inputs: Iterable[str]) -> list[Prediction]:
    """One entry per file; missing paths and empty folders come back as errors. A named file is
    always tried; a folder gives only its image files (a README beside them is no error)."""
    found: list[Prediction] = []
    for entry in inputs:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                found.append(Prediction(str(entry), error="folder holds no image files"))
            found.extend(Prediction(str(p)) for p in files)
        elif path.exists():
            found.append(Prediction(str(entry)))
        else:
            found.append(Prediction(str(entry), error="no such file or folder"))
    return found


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB; transparency is laid over white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float greyscale
        a = np.asarray(img, dtype=np.float64)
        top = a.max(initial=0)
        scale = 1.0 / 255 if img.mode == "F" and top <= 1.0 else 1.0 if top <= 255 else 257.0
        img = Image.fromarray(np.clip(a / scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, resize: str = "crop") -> np.ndarray:
    """An image file as (32, 32, 3) uint8, the way CIFAR-10's images look."""
    with Image.open(path) as img:
        # A JPEG can decode straight at 1/2, 1/4 or 1/8 scale: far faster for big photos.
        img.draft("RGB", (4 * SIZE, 4 * SIZE))
        img = ImageOps.exif_transpose(img)  # phone photos are often stored sideways
        rgb = to_rgb(img)
    size, bicubic = (SIZE, SIZE), Image.Resampling.BICUBIC
    small = ImageOps.fit(rgb, size, bicubic) if resize == "crop" else rgb.resize(size, bicubic)
    return np.asarray(small, dtype=np.uint8)


def classify(
    model: ImageClassifier,
    images: np.ndarray,
    topk: int,
    device: torch.device,
    batch_size: int,
    temperature: float = 1.0,
) -> list[list[tuple[str, float]]]:
    """Top-k (class, probability) for each (32, 32, 3) uint8 image, normalized as in training;
    probabilities of ``logits / temperature`` (evaluate calibrate=true fits one)."""
    class_names, topk = model.hparams.class_names, min(topk, len(model.hparams.class_names))
    normalize = Normalize(model.hparams.mean, model.hparams.std)
    model = model.to(device).eval()
    tops: list[list[tuple[str, float]]] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            logits = model(normalize(chunk.to(device))).float() / temperature
            probs = logits.softmax(dim=1)
            values, indices = probs.topk(topk, dim=1)
            for v, i in zip(values.cpu().tolist(), indices.cpu().tolist(), strict=True):
                tops.append([(class_names[j], p) for j, p in zip(i, v, strict=True)])
    return tops


def predict(cfg: DictConfig) -> list[Prediction]:
    """Classify every image ``cfg.images`` names; unreadable ones carry an ``error``."""
    check_prediction(cfg)
    inputs = cfg.get("images")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    resize, topk = cfg.get("resize", "crop"), int(cfg.get("topk", 3))
    device = pick_device(str(cfg.get("device", "auto")))
    ckpt = tested_checkpoint(str(cfg.ckpt_path))
    model = OnnxClassifier(ckpt) if ckpt.suffix == ".onnx" else load_classifier(ckpt)[0]
    predictions = find_images(inputs)
    for p in predictions:
        try:
            p.image = load_image(p.path, resize) if p.error is None else None
        except UnidentifiedImageError:
            p.error = "not a readable image (not an image format PIL knows)"
        except UNREADABLE as e:
            p.error = f"not a readable image ({(str(e) or type(e).__name__).splitlines()[0]})"
        except ValueError as e:  # a mode PIL cannot convert, e.g. LAB
            p.error = f"cannot convert this image to RGB ({e})"
    if readable := [p for p in predictions if p.error is None]:
        batch = np.stack([p.image for p in readable])
        batch_size, temperature = cfg.get("batch_size", 256), float(cfg.get("temperature", 1.0))
        tops = classify(model, batch, topk, device, batch_size, temperature)
        for p, top in zip(readable, tops, strict=True):
            p.top = top
    return predictions


def report(predictions: Sequence[Prediction], cfg: DictConfig, out: Console, err: Console) -> int:
    """Print/write the results; the exit code: 0 if every image was classified, else 1."""
    failed = [p for p in predictions if p.error is not None]
    classified = [p for p in predictions if p.top is not None]
    notes = [f"{len(classified)} classified, {len(failed)} failed"]
    payload = {
        "checkpoint": str(tested_checkpoint(str(cfg.ckpt_path))),
        "resize": cfg.get("resize", "crop"),
        "predictions": [p.to_json() for p in predictions],
        "classified": len(predictions) - len(failed),
        "failed": len(failed),
    }
    text = json.dumps(payload, indent=2)
    if cfg.get("output"):
        path = Path(str(cfg.output)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        notes.append(f"JSON in {cfg.output}")
    if cfg.get("plot") and classified:
        names, tops = [Path(p.path).name for p in classified], [p.top for p in classified]
        fig = figures.predictions_figure(np.stack([p.image for p in classified]), names, tops)
        figures.save_png(fig, Path(str(cfg.plot)).expanduser())
        notes.append(f"picture in {cfg.plot}")
    if cfg.get("json"):
        print(text)  # not Rich: it would wrap long lines and break the JSON
    elif classified:
        table, topk = Table(title_justify="left"), max(len(p.top) for p in classified)
        table.add_column("image", overflow="fold")
        ordinals = ["1st", "2nd", "3rd"] + [f"{i}th" for i in range(4, topk + 1)]
        for i in range(topk):
            table.add_column(ordinals[i], style="bold" if i == 0 else "")
        for p in classified:
            table.add_row(p.path, *(f"{c} {prob:.1%}" for c, prob in p.top))
        out.print(table)
    for p in failed:
        err.print(Text.assemble(("error: ", "bold red"), f"{p.path}: {p.error}"))
    if not cfg.get("json"):
        err.print("; ".join(notes))
    return 1 if failed else 0


def run(cfg: DictConfig) -> None:
    """``cifar-predict`` with its composed config (cifar_lightning/predict.py): the table (or
    JSON), and exit code 1 if any image could not be read."""
    with exit_on_user_error():
        code = report(predict(cfg), cfg, Console(), Console(stderr=True, highlight=False))
    sys.exit(code)
