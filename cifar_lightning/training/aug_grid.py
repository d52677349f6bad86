"""A picture of what an augmentation pipeline does: training images, each drawn several times.

Rows are training images (one per class, in class order), the first column the image as
stored, the others independent draws through ``aug.pipeline``. Used by
``python -m cifar_lightning.show_aug`` and, at the start of training, by the
AugmentationPreview callback (TensorBoard).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

from cifar_lightning.data.datasets import ArrayDataset

Pipeline = Callable[[torch.Tensor], torch.Tensor]


def pick_images(
    dataset: ArrayDataset, num_classes: int, count: int
) -> tuple[torch.Tensor, list[int]]:
    """``count`` images cycling through the classes (the first of each, then the second …).

    Returns (count, 3, H, W) uint8 images, unaugmented, and their labels.
    """
    labels = dataset.labels[dataset.indices]
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    chosen: list[int] = []
    for rank in range(count):
        for c in range(num_classes):
            if len(chosen) < count and rank < len(per_class[c]):
                chosen.append(int(dataset.indices[per_class[c][rank]]))
        if len(chosen) >= count:
            break
    images = torch.from_numpy(dataset.images[chosen]).permute(0, 3, 1, 2).contiguous()
    return images, [int(dataset.labels[i]) for i in chosen]


def draw(pipeline: Pipeline, images: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(N, draws, 3, H, W): each image through the pipeline ``draws`` times.

    Seeded, and inside a forked RNG so that drawing leaves training's random streams alone.
    One thread, as in a loader worker: on a 32x32 image torch's intra-op threads only add
    overhead (on a busy CPU a rotation took 60 ms with two threads, 0.4 ms with one).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack(
                [torch.stack([pipeline(img) for _ in range(draws)]) for img in images]
            )
    finally:
        torch.set_num_threads(threads)


def figure(images: torch.Tensor, augmented: torch.Tensor, row_labels: Sequence[str], title: str):
    """One image: originals in the first column, the draws beside them."""
    import matplotlib.pyplot as plt

    n, draws = augmented.shape[:2]
    cells = torch.cat([images.unsqueeze(1), augmented], dim=1).flatten(0, 1)
    grid = make_grid(cells, nrow=draws + 1, padding=2, pad_value=255)
    step = images.shape[-1] + 2
    fig, ax = plt.subplots(figsize=(0.75 * (draws + 1) + 1.2, 0.75 * n + 0.9), layout="constrained")
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([2 + step * i + step / 2 - 1 for i in range(draws + 1)])
    ax.set_xticklabels(["stored"] + [str(i + 1) for i in range(draws)])
    ax.set_yticks([2 + step * i + step / 2 - 1 for i in range(n)])
    ax.set_yticklabels(row_labels)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=10)
    return fig


def render(fig) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 image, drawn once (then closed): PNG and TensorBoard."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def save_png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def preview(
    dataset: ArrayDataset,
    classes: Sequence[str],
    pipeline: Pipeline,
    title: str,
    images: int = 10,
    draws: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """The whole picture for a training set and its pipeline, as an (H, W, 3) uint8 image."""
    originals, labels = pick_images(dataset, len(classes), images)
    augmented = draw(pipeline, originals, draws, seed)
    return render(figure(originals, augmented, [classes[y] for y in labels], title))
