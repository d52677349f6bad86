"""The pictures of a run, ``evaluate``, ``predict`` and ``report``, drawn one way everywhere:
without pyplot (no global registry to leak memory in long runs, no GUI backend needed), and
:func:`publish` writes the same PNG bytes to disk and to TensorBoard, so they never differ."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

RIGHT = "#1a9850"  # green frame: correctly classified
WRONG = "#d73027"  # red frame: misclassified
DPI = 100


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig needs one
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path, png: bytes | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png if png is not None else png_bytes(fig))
    return path


def log_png(loggers: Iterable[object], tag: str, png: bytes, step: int = 0) -> bool:
    """Add an encoded PNG as image ``tag`` to every TensorBoard logger; False if none."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(io.BytesIO(png)) as img:
        width, height = img.size
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    tensorboards = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
    for logger in tensorboards:
        writer = logger.experiment._get_file_writer()
        writer.add_summary(summary, step)
        writer.flush()
    return bool(tensorboards)


def publish(
    fig: Figure, path: str | Path | None, loggers: Iterable[object], tag: str, step: int = 0
) -> Path | None:
    """Render once; write the PNG to ``path`` (if given) and to TensorBoard as ``tag``."""
    png = png_bytes(fig)
    log_png(loggers, tag, png, step)
    return save_png(fig, path, png) if path is not None else None


def confusion_matrix_figure(
    matrix: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix"
) -> Figure:
    """Counts in the cells; colour is the row share, so rare and common classes read alike."""
    matrix = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    side = min(max(5.0, 0.55 * k + 2.5), 16.0)  # 100 classes: a pattern, not numbers
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = 10 if k <= 20 else 5
    ax.set_xticks(range(k), class_names, rotation=45 if k <= 20 else 90, ha="right", fontsize=ticks)
    ax.set_yticks(range(k), class_names, fontsize=ticks)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if k <= 20:  # beyond that the numbers no longer fit their cells
        size = 9 if k <= 10 else 6
        for (i, j), count in np.ndenumerate(matrix):
            color = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=size, color=color)
    return fig


def group_confusion(
    matrix: np.ndarray, class_names: Sequence[str], groups: Mapping[str, Sequence[str]]
) -> np.ndarray:
    """``matrix`` summed into ``groups`` (name → its classes), rows and columns in their order."""
    index = {name: i for i, name in enumerate(class_names)}
    member = np.zeros((len(class_names), len(groups)), dtype=np.int64)
    for g, names in enumerate(groups.values()):
        member[[index[n] for n in names], g] = 1
    return member.T @ np.asarray(matrix, dtype=np.int64) @ member


def class_accuracy_figure(
    rows: Sequence[Mapping], overall: float, title: str, most: int = 20
) -> Figure:
    """Accuracy per class as bars, worst at the top, each with what it is most often mistaken
    for; beyond ``most`` classes only the ``most`` worst, so 100 classes stay readable."""
    scored = sorted((r for r in rows if r["acc"] is not None), key=lambda r: r["acc"])[:most]
    fig = new_figure(9.0, 1.2 + 0.32 * max(len(scored), 1))
    ax = fig.add_subplot()
    y = np.arange(len(scored))[::-1]
    accs = [r["acc"] for r in scored]
    colors = [RIGHT if a >= overall else WRONG for a in accs]
    ax.barh(y, accs, color=colors, height=0.7)
    ax.set_yticks(y, [r["class"] for r in scored], fontsize=9)
    ax.axvline(overall, color="black", lw=1, ls="--", label=f"all classes {overall:.1%}")
    for yi, r in zip(y, scored, strict=True):
        note = f"{r['acc']:.1%}"
        if r.get("most_confused_with"):
            note += f"  → {r['most_confused_with']} ({r['most_confused_share']:.0%})"
        ax.text(r["acc"] + 0.01, yi, note, va="center", fontsize=8)
    ax.set(xlim=(0, 1.25), xlabel="accuracy (→ the class it is most often mistaken for)")
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
    ax.set_title(title, fontsize=11)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def image_grid_figure(
    images: np.ndarray,
    captions: Sequence[str],
    frame_colors: Sequence[str] | None = None,
    title: str = "",
    ncols: int = 8,
    scale: int = 3,
) -> Figure:
    """(N, H, W, 3) uint8 images, captioned and optionally framed, in one mosaic (one axes per
    image would take many times as long to draw), enlarged by repeating pixels: at 32x32 any
    smoothing would invent detail the model never saw."""
    n, h, w = len(images), images.shape[1] * scale, images.shape[2] * scale
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    frame = 4 if frame_colors else 0
    colors = frame_colors or ["black"] * n
    lines = max((c.count("\n") + 1 for c in captions), default=1)
    caption_h, gap = 6 + 12 * lines, 14
    cell_w, cell_h = w + 2 * frame + gap, h + 2 * frame + caption_h + gap
    title_h = 30 if title else 0
    mosaic = np.full((nrows * cell_h, ncols * cell_w, 3), 255, dtype=np.uint8)
    fig = new_figure(mosaic.shape[1] / DPI, (mosaic.shape[0] + title_h) / DPI, layout=None)
    ax = fig.add_axes((0.0, 0.0, 1.0, mosaic.shape[0] / (mosaic.shape[0] + title_h)))
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = r * cell_h + caption_h, c * cell_w + gap // 2
        if frame:
            rgb = [int(colors[i][k : k + 2], 16) for k in (1, 3, 5)]
            mosaic[top : top + h + 2 * frame, left : left + w + 2 * frame] = rgb
        big = images[i].repeat(scale, axis=0).repeat(scale, axis=1)
        mosaic[top + frame : top + frame + h, left + frame : left + frame + w] = big
        x = left + frame + w / 2
        ax.text(x, top - 3, captions[i], ha="center", va="bottom", fontsize=7, color=colors[i])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 4 / (mosaic.shape[0] + title_h), va="top", fontsize=11)
    return fig


def prediction_grid_figure(
    images: np.ndarray,
    targets: Sequence[int],
    preds: Sequence[int],
    class_names: Sequence[str],
    title: str = "",
) -> Figure:
    """Test images framed green (right) or red (wrong), captioned with the prediction."""
    captions, colors = [], []
    for t, p in zip(targets, preds, strict=True):
        right = t == p
        captions.append(class_names[p] if right else f"{class_names[p]}\n(is {class_names[t]})")
        colors.append(RIGHT if right else WRONG)
    return image_grid_figure(images, captions, colors, title)


def misclassified_figure(
    images: np.ndarray,
    targets: Sequence[int],
    preds: Sequence[int],
    confidences: Sequence[float],
    class_names: Sequence[str],
    title: str = "",
) -> Figure:
    """Mistakes with their true label and what the model said, with its confidence."""
    captions = [
        f"true: {class_names[t]}\npred: {class_names[p]} {c:.0%}"
        for t, p, c in zip(targets, preds, confidences, strict=True)
    ]
    return image_grid_figure(images, captions, None, title)


def predictions_figure(
    images: np.ndarray, names: Sequence[str], topk: Sequence[Sequence[tuple[str, float]]]
) -> Figure:
    """``predict``'s picture: each image as the model saw it, beside its top-k probabilities."""
    n = len(images)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    k = max(len(t) for t in topk)
    fig = new_figure(4.2 * ncols, (0.9 + 0.22 * k) * nrows)
    grid = fig.add_gridspec(nrows, 2 * ncols, width_ratios=[1, 1.8] * ncols)
    for i in range(n):
        r, c = divmod(i, ncols)
        ax_img = fig.add_subplot(grid[r, 2 * c], xticks=[], yticks=[])
        ax_img.imshow(images[i], interpolation="nearest")
        ax_img.set_title(names[i] if len(names[i]) <= 22 else "…" + names[i][-21:], fontsize=8)
        ax_bar = fig.add_subplot(grid[r, 2 * c + 1])
        labels, probs = zip(*topk[i][::-1], strict=True)
        colors = ["#bdbdbd"] * (len(probs) - 1) + ["#2b8cbe"]
        ax_bar.barh(range(len(probs)), probs, color=colors)
        ax_bar.set_yticks(range(len(probs)), labels, fontsize=8)
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xticks([0, 0.5, 1], ["0", "50%", "100%"])
        ax_bar.tick_params(axis="x", labelsize=7)
        for y, p in enumerate(probs):
            ax_bar.text(min(p + 0.02, 0.8), y, f"{p:.0%}", va="center", fontsize=7)
    return fig


Curve = Sequence[tuple[float, float]]  # (x, value) points


def curves_figure(
    history: Mapping[str, Curve], title: str = "", train_acc: str = "train"
) -> Figure:
    """Loss and accuracy per epoch, train and val side by side; missing metrics are left out.
    ``train_acc`` names the train accuracy (with MixUp/CutMix: against the dominant label)."""
    fig = new_figure(10, 4)
    if title:
        fig.suptitle(title)
    panels = (
        ("loss", (("train/loss_epoch", "train"), ("val/loss", "val"))),
        ("accuracy", (("train/acc", train_acc), ("val/acc", "val"))),
    )
    for ax, (ylabel, series) in zip(fig.subplots(1, 2), panels, strict=True):
        for key, label in series:
            if points := history.get(key):
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        if ax.has_data():
            ax.legend()
        _epoch_axes(ax, ylabel)
    return fig


def _epoch_axes(ax: Axes, ylabel: str) -> None:
    """Whole-epoch ticks, also for a run of one epoch (matplotlib would tick 0.96 … 1.04)."""
    ax.set(xlabel="epoch", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.has_data():
        low, high = ax.dataLim.intervalx
        if high - low < 1:  # one epoch: the locator finds no two whole numbers to tick
            ax.set_xlim(low - 0.5, high + 0.5)
            ax.set_xticks(sorted({round(low), round(high)}))


def compare_curves_figure(
    curves: Mapping[str, Curve], ylabel: str = "val accuracy", title: str = ""
) -> Figure:
    """One line per run (the sweep report's picture); the legend goes beside the plot."""
    fig = new_figure(10 if len(curves) > 1 else 7, 4.5)
    ax = fig.add_subplot()
    for label, points in curves.items():
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    _epoch_axes(ax, ylabel)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
