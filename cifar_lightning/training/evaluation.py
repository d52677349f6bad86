"""What a pass over a labelled split tells us beyond one accuracy number.

:class:`PredictionCollector` watches batches go by (normalized images, logits, labels) and
keeps the confusion matrix (torchmetrics) plus two small, seeded samples of images: one of
all images, for the green/red grid, and one of the mistakes, for the misclassified gallery.
Reservoir sampling keeps each sample uniform over the whole split in one pass and fixed
memory, so a test set sorted by class (as an image folder is) still shows every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix


def to_uint8_images(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalization: (N, 3, H, W) float -> (N, H, W, 3) uint8, for pictures."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = (x.detach().float().cpu() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


@dataclass
class Examples:
    """A few images with what the model said about them."""

    images: np.ndarray  # (N, H, W, 3) uint8
    targets: list[int] = field(default_factory=list)
    preds: list[int] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Results:
    """The outcome of one pass: everything ``eval.json`` and the pictures are made of."""

    confusion: np.ndarray  # (K, K) int64, rows = true class, columns = predicted
    class_names: list[str]
    sample: Examples
    mistakes: Examples

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.num_images, 1))

    def per_class(self) -> list[dict[str, Any]]:
        """Per true class: images, correct, accuracy, and the class it is most mistaken for."""
        rows = []
        for i, name in enumerate(self.class_names):
            row = self.confusion[i]
            count, correct = int(row.sum()), int(row[i])
            wrong = row.copy()
            wrong[i] = 0
            confused = int(wrong.argmax())
            rows.append(
                {
                    "class": name,
                    "images": count,
                    "correct": correct,
                    "acc": correct / count if count else None,
                    "most_confused_with": self.class_names[confused] if wrong.any() else None,
                    "most_confused_share": int(wrong[confused]) / count if wrong.any() else 0.0,
                }
            )
        return rows


class _Reservoir:
    """A uniform random sample of at most ``size`` items from a stream (Algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.seen = 0
        # (position in stream, image, target, prediction, confidence), indexed by slot
        self.items: list[tuple[int, np.ndarray, int, int, float] | None] = []

    def offer_batch(
        self,
        candidates: np.ndarray,
        images: torch.Tensor,
        targets: np.ndarray,
        preds: np.ndarray,
        confidences: np.ndarray,
        to_uint8,
    ) -> None:
        """Offer the batch items at indices ``candidates``; decode only those kept."""
        if self.size == 0:
            return
        keep: dict[int, tuple[int, int]] = {}  # batch index -> (slot, position in stream)
        for i in candidates:
            if self.seen < self.size:
                keep[int(i)] = (self.seen, self.seen)
            else:
                j = int(self.rng.integers(0, self.seen + 1))
                if j < self.size:
                    # Slot j changes hands; an item of this batch that held it loses it.
                    keep = {b: v for b, v in keep.items() if v[0] != j}
                    keep[int(i)] = (j, self.seen)
            self.seen += 1
        if not keep:
            return
        index = sorted(keep)
        pictures = to_uint8(images[index])
        for b, picture in zip(index, pictures, strict=True):
            slot, position = keep[b]
            item = (position, picture, int(targets[b]), int(preds[b]), float(confidences[b]))
            if slot >= len(self.items):
                self.items.extend([None] * (slot + 1 - len(self.items)))
            self.items[slot] = item

    def examples(self, order_by_class: bool) -> Examples:
        items = sorted(
            (t for t in self.items if t is not None),
            key=lambda t: (t[2], t[0]) if order_by_class else t[0],
        )
        if not items:
            return Examples(images=np.zeros((0, 32, 32, 3), dtype=np.uint8))
        return Examples(
            images=np.stack([t[1] for t in items]),
            targets=[t[2] for t in items],
            preds=[t[3] for t in items],
            confidences=[t[4] for t in items],
        )


class PredictionCollector:
    """Accumulates a confusion matrix and picture samples over batches of one split.

    ``sample_size`` images of the whole split (the green/red grid) and ``mistakes_size``
    misclassified ones are kept, drawn with ``seed`` so the same checkpoint always shows the
    same pictures.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        sample_size: int = 64,
        mistakes_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.class_names = list(class_names)
        self.mean = list(mean)
        self.std = list(std)
        self.sample_size = sample_size
        self.mistakes_size = mistakes_size
        self.seed = seed
        self.confusion = MulticlassConfusionMatrix(len(self.class_names))
        self.reset()

    def reset(self) -> None:
        self.confusion.reset()
        # One generator each, so the draws (and pictures) do not depend on the batch size.
        self._sample = _Reservoir(self.sample_size, np.random.default_rng([self.seed, 0]))
        self._mistakes = _Reservoir(self.mistakes_size, np.random.default_rng([self.seed, 1]))

    def _to_uint8(self, x: torch.Tensor) -> np.ndarray:
        return to_uint8_images(x, self.mean, self.std)

    @torch.no_grad()
    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        if self.confusion.device != logits.device:
            self.confusion = self.confusion.to(logits.device)
        probs = logits.softmax(dim=1)
        confidence, preds = probs.max(dim=1)
        self.confusion.update(preds, targets)
        t, p, c = (v.cpu().numpy() for v in (targets, preds, confidence))
        everything = np.arange(len(t))
        self._sample.offer_batch(everything, images, t, p, c, self._to_uint8)
        self._mistakes.offer_batch(np.flatnonzero(t != p), images, t, p, c, self._to_uint8)

    def compute(self) -> Results:
        return Results(
            confusion=self.confusion.compute().cpu().numpy().astype(np.int64),
            class_names=self.class_names,
            sample=self._sample.examples(order_by_class=False),
            mistakes=self._mistakes.examples(order_by_class=True),
        )
