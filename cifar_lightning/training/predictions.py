"""What a pass over a labelled split tells beyond accuracy: the confusion matrix, every logit
(for calibration) and seeded samples of images (all, and the mistakes). Reservoir sampling
keeps each sample uniform over the split in one pass and fixed memory, so a class-sorted test
set still shows every class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

Decode = Callable[[torch.Tensor], np.ndarray]


def to_uint8_images(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalization: (N, 3, H, W) float -> (N, H, W, 3) uint8, for pictures."""
    m, s = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in (mean, std))
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
    # Every image's logits and label (N x K floats: 0.4 MB for CIFAR-10's test set), for
    # calibration and a temperature fitted afterwards.
    logits: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    targets: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.num_images, 1))

    def per_class(self) -> list[dict[str, Any]]:
        """Per true class: images, correct, accuracy, and the class it is most mistaken for."""
        rows = []
        for i, (name, row) in enumerate(zip(self.class_names, self.confusion, strict=True)):
            count, correct = int(row.sum()), int(row[i])
            wrong = np.where(np.arange(len(row)) == i, 0, row)  # the row without its diagonal
            top = int(wrong.argmax()) if wrong.any() else None
            rows.append(
                {
                    "class": name,
                    "images": count,
                    "correct": correct,
                    "acc": correct / count if count else None,
                    "most_confused_with": None if top is None else self.class_names[top],
                    "most_confused_share": 0.0 if top is None else int(wrong[top]) / count,
                }
            )
        return rows


class _Reservoir:
    """A uniform random sample of at most ``size`` items from a stream (Algorithm R)."""

    def __init__(self, size: int, rng: np.random.Generator, decode: Decode) -> None:
        self.size, self.rng, self.decode = size, rng, decode
        self.seen = 0
        # slot -> (position in stream, image, target, prediction, confidence)
        self.items: dict[int, tuple[Any, ...]] = {}

    def offer_batch(
        self, candidates: np.ndarray, images: torch.Tensor, labels: Sequence[np.ndarray]
    ) -> None:
        """Offer the batch items at ``candidates``, with their target, prediction and confidence
        in ``labels``; decode only the images kept."""
        if self.size == 0:
            return
        keep: dict[int, tuple[int, int]] = {}  # slot -> (batch index, position in stream)
        for i in candidates:
            j = self.seen if self.seen < self.size else int(self.rng.integers(0, self.seen + 1))
            if j < self.size:  # slot j changes hands, also from an item of this very batch
                keep[j] = (int(i), self.seen)
            self.seen += 1
        index = [b for b, _ in keep.values()]
        pictures = dict(zip(index, self.decode(images[index]), strict=True))
        for slot, (b, position) in keep.items():
            self.items[slot] = (position, pictures[b], *(v[b].item() for v in labels))

    def examples(self, order_by_class: bool) -> Examples:
        items = sorted(self.items.values(), key=lambda t: (t[2], t[0]) if order_by_class else t[0])
        if not items:
            return Examples(images=np.zeros((0, 32, 32, 3), dtype=np.uint8))
        _, images, targets, preds, confidences = zip(*items, strict=True)
        return Examples(np.stack(images), list(targets), list(preds), list(confidences))


class PredictionCollector:
    """Confusion matrix, ``sample_size`` images (the green/red grid) and ``mistakes_size``
    misclassified ones over the batches of one split; seeded, so a checkpoint always shows
    the same pictures."""

    def __init__(
        self,
        class_names: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        sample_size: int = 64,
        mistakes_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.class_names, self.mean, self.std = list(class_names), list(mean), list(std)
        self.sample_size, self.mistakes_size, self.seed = sample_size, mistakes_size, seed
        self.confusion = MulticlassConfusionMatrix(len(self.class_names), validate_args=False)
        self.reset()

    def reset(self) -> None:
        self.confusion.reset()
        decode = partial(to_uint8_images, mean=self.mean, std=self.std)
        # One generator each, so the draws (and pictures) do not depend on the batch size.
        rngs = [np.random.default_rng([self.seed, i]) for i in (0, 1)]
        self._sample = _Reservoir(self.sample_size, rngs[0], decode)
        self._mistakes = _Reservoir(self.mistakes_size, rngs[1], decode)
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.detach().float()
        if self.confusion.device != logits.device:
            self.confusion = self.confusion.to(logits.device)
        confidence, preds = logits.softmax(dim=1).max(dim=1)
        self.confusion.update(preds, targets)
        labels = [v.cpu().numpy() for v in (targets, preds, confidence)]
        self._logits.append(logits.cpu())
        self._targets.append(targets.cpu())
        self._sample.offer_batch(np.arange(len(targets)), images, labels)
        self._mistakes.offer_batch(np.flatnonzero(labels[0] != labels[1]), images, labels)

    def compute(self) -> Results:
        return Results(
            confusion=self.confusion.compute().cpu().numpy().astype(np.int64),
            class_names=self.class_names,
            sample=self._sample.examples(order_by_class=False),
            mistakes=self._mistakes.examples(order_by_class=True),
            logits=torch.cat(self._logits) if self._logits else torch.zeros(0, 0),
            targets=torch.cat(self._targets) if self._targets else torch.zeros(0).long(),
        )
