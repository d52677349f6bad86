"""A picture of what an augmentation pipeline does, for ``show_aug`` and AugmentationPreview:
rows are training images (one per class, in class order), the first column the image as
stored, the others independent draws through ``aug.pipeline``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid

from cifar_lightning.data.datamodule import ArrayDataset
from cifar_lightning.training import figures

Pipeline = Callable[[torch.Tensor], torch.Tensor]


def pick_images(
    dataset: ArrayDataset, num_classes: int, count: int
) -> tuple[torch.Tensor, list[int]]:
    """``count`` unaugmented (count, 3, H, W) uint8 images and their labels, cycling through
    the classes (the first of each, then the second …)."""
    labels = dataset.labels[dataset.indices]
    per_class = [dataset.indices[labels == c] for c in range(num_classes)]
    chosen = [int(ix[rank]) for rank in range(count) for ix in per_class if rank < len(ix)][:count]
    images = torch.from_numpy(dataset.images[chosen]).permute(0, 3, 1, 2).contiguous()
    return images, [int(dataset.labels[i]) for i in chosen]


def draw(pipeline: Pipeline, images: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """(N, draws, 3, H, W), seeded in a forked RNG that leaves training's streams alone.

    One thread, as in a loader worker: on a 32x32 image intra-op threads only add overhead (on
    a busy CPU a rotation took 60 ms with two threads, 0.4 ms with one).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = [torch.stack([pipeline(img) for _ in range(draws)]) for img in images]
            return torch.stack(views)
    finally:
        torch.set_num_threads(threads)


def render(
    images: torch.Tensor,
    augmented: torch.Tensor,
    row_labels: Sequence[str],
    title: str,
    *,
    card: bool = False,
) -> Figure:
    """Originals in the first column, the draws beside them. A card (TensorBoard's) draws the
    images 1:1 onto its pixels, as many rows and draws as it holds."""
    if card:
        return _card(images, augmented, row_labels, title)
    n, draws = augmented.shape[:2]
    cells = torch.cat([images.unsqueeze(1), augmented], dim=1).flatten(0, 1)
    grid = make_grid(cells, nrow=draws + 1, padding=2, pad_value=255)
    step = images.shape[-1] + 2
    centers = [1 + step * (i + 0.5) for i in range(max(n, draws + 1))]  # of the cells, in pixels
    fig = figures.new_figure(0.75 * (draws + 1) + 1.2, 0.75 * n + 0.9)
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks(centers[: draws + 1], ["stored"] + [str(i + 1) for i in range(draws)])
    ax.set_yticks(centers[:n], row_labels)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=10)
    return fig


def _card(
    images: torch.Tensor, augmented: torch.Tensor, row_labels: Sequence[str], title: str
) -> Figure:
    """The card: the first images and draws that fit at 1:1, the title saying how many."""
    n, draws = augmented.shape[:2]
    label_px = 6 + max(figures.text_px(s, figures.CARD_SMALL) for s in row_labels)
    step = images.shape[-1] + 2  # an image and make_grid's padding
    draws = min(draws, int((figures.CARD_PX - label_px - 4) // step) - 1)
    height, below = figures.CARD_HEIGHT, figures.LINE_PX + 2  # the column names

    def head(rows: int) -> str:
        return f"{title}; {rows} images, {draws} draws each here"

    rows = n
    heading = head(rows) if draws < augmented.shape[1] else title
    while (fits := int((height - figures.title_px(heading) - below) // step)) < rows:
        rows, heading = fits, head(fits)
    fig = figures.card_figure(layout=None)
    top = figures.card_title(fig, heading)
    cells = torch.cat([images[:rows].unsqueeze(1), augmented[:rows, :draws]], dim=1)
    grid = make_grid(cells.flatten(0, 1), nrow=draws + 1, padding=2, pad_value=255)
    width_px, height_px = grid.shape[2], grid.shape[1]  # 1:1 on the card's pixels
    ax = fig.add_axes((label_px / figures.CARD_PX, (height - top - height_px) / height,
                       width_px / figures.CARD_PX, height_px / height))  # fmt: skip
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    centers = [1 + step * (i + 0.5) for i in range(max(rows, draws + 1))]
    ax.set_xticks(centers[: draws + 1], ["stored"] + [str(i + 1) for i in range(draws)])
    ax.set_yticks(centers[:rows], row_labels[:rows])
    ax.tick_params(length=0, pad=2)
    ax.spines[:].set_visible(False)
    return fig


def preview(
    dataset: ArrayDataset,
    classes: Sequence[str],
    pipeline: Pipeline,
    title: str,
    images: int = 10,
    draws: int = 8,
    seed: int = 0,
) -> figures.Drawing:
    """The whole picture for a training set and its pipeline, its draws made once for both
    sizes: call it for the full figure, ``card=True`` for TensorBoard's."""
    originals, labels = pick_images(dataset, len(classes), images)
    augmented = draw(pipeline, originals, draws, seed)
    return functools.partial(render, originals, augmented, [classes[y] for y in labels], title)
