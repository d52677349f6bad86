"""The pictures of a run, ``evaluate``, ``predict`` and ``report``, drawn one way everywhere,
without pyplot (no global registry to leak memory in long runs, no GUI backend needed).

Each picture TensorBoard shows is drawn twice, by the same function: full size for the run dir
(600-1000 px wide, every image and number, to read at leisure) and, with ``card=True``, as a
*card* for TensorBoard, which fits an image into its card: 350 px wide in IMAGES, and in TIME
SERIES (where it opens) about 372 x 215 px, the image scaled to fit both. A full-size picture
shrinks there to text 3-5 px high. A card is :data:`CARD_PX` x :data:`CARD_HEIGHT` px, so both
show it at about 1:1, with no text under :data:`CARD_SMALL` pt (11 px). :func:`publish` draws
both. A card keeps what reads at that size and says what it leaves out: 6 images of a grid,
the worst classes, a confusion matrix of more than :data:`CARD_CLASSES` classes as its most
frequent confusions, the corruptions by family; the run dir has all of it."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from PIL import Image

RIGHT = "#1a9850"  # green frame: correctly classified
WRONG = "#d73027"  # red frame: misclassified
DPI = 100

# TensorBoard scales an image to fit its box: 350 px wide in IMAGES (whatever the window),
# about 372 x 215 in TIME SERIES (at a 1400 px window; a wider one widens it, not heightens).
CARD_PX, CARD_HEIGHT = 350, 200  # a card, in px: shown about 1:1 in both
CARD_WIDTH = CARD_PX / DPI  # inches
CARD_TEXT, CARD_SMALL = 9.0, 8.0  # pt: 12.5 and 11.1 px at DPI 100
CARD_TITLE = CARD_TEXT
LINE_PX = 15  # a line of labels, in px
CARD_CLASSES = 12  # up to this many, a card's confusion matrix has the counts in its cells
CARD_RC = {  # what a card's text defaults to (explicit sizes in the figures come on top)
    "font.size": CARD_TEXT,
    "axes.titlesize": CARD_TITLE,
    "figure.titlesize": CARD_TITLE,
    "axes.labelsize": CARD_TEXT,
    "xtick.labelsize": CARD_SMALL,
    "ytick.labelsize": CARD_SMALL,
    "legend.fontsize": CARD_SMALL,
}


class Drawing(Protocol):
    """A figure function with its data bound (``functools.partial``): full size or a card."""

    def __call__(self, *, card: bool = False) -> Figure: ...


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)  # attach the Agg canvas: savefig needs one
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def card_png(draw: Drawing) -> bytes:
    """The card form of ``draw``, drawn and rendered with the card's text sizes."""
    with matplotlib.rc_context(CARD_RC):  # also around savefig: ticks are made at draw time
        return png_bytes(draw(card=True))


@functools.cache
def _renderer() -> RendererAgg:
    return RendererAgg(1, 1, DPI)


def text_px(text: str, fontsize: float) -> float:
    """How many pixels wide ``text`` is at ``fontsize`` pt (at :data:`DPI`)."""
    width, _, _ = _renderer().get_text_width_height_descent(
        text, FontProperties(size=fontsize), False
    )
    return width


def wrap(text: str, fontsize: float = CARD_TITLE, width_px: int = CARD_PX - 12) -> str:
    """``text`` in lines no wider than ``width_px`` at ``fontsize`` pt, broken between words
    (a word wider than that alone on its line)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and text_px(longer, fontsize) > width_px:
                lines.append(line)
                longer = word
            line = longer
        lines.append(line)
    return "\n".join(lines)


def card_figure(layout: str | None = "constrained") -> Figure:
    return new_figure(CARD_WIDTH, CARD_HEIGHT / DPI, layout=layout)


def title_px(title: str) -> int:
    """The pixels :func:`card_title` takes from the top of a card for ``title`` (measured: a
    first line of 17 px with the margin, 18 for each further line)."""
    return 20 + 18 * wrap(title).count("\n") if title else 0


def card_title(fig: Figure, title: str) -> int:
    """``title`` wrapped over the card (not centred on an axes, which sits right of its
    labels), where constrained layout leaves room for it or at the top; returns its pixels."""
    if fig.get_layout_engine() is not None:
        fig.suptitle(wrap(title), fontsize=CARD_TITLE)
    else:
        fig.suptitle(wrap(title), y=1 - 3 / fig.bbox.height, va="top", fontsize=CARD_TITLE)
    return title_px(title)


def shorten(text: str, width_px: float, fontsize: float = CARD_SMALL) -> str:
    """``text``, cut with "…" to fit ``width_px``."""
    while len(text) > 1 and text_px(text, fontsize) > width_px:
        text = text[:-2] + "…"
    return text


def save_png(fig: Figure, path: str | Path, png: bytes | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png if png is not None else png_bytes(fig))
    return path


def tensorboards(loggers: Iterable[object]) -> list[Any]:
    """The TensorBoard loggers among ``loggers``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]


def log_png(loggers: Iterable[object], tag: str, png: bytes, step: int = 0) -> bool:
    """Add an encoded PNG as image ``tag`` to every TensorBoard logger; False if none."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(io.BytesIO(png)) as img:
        width, height = img.size
    image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    summary = Summary(value=[Summary.Value(tag=tag, image=image)])
    found = tensorboards(loggers)
    for logger in found:
        writer = logger.experiment._get_file_writer()
        writer.add_summary(summary, step)
        writer.flush()
    return bool(found)


def publish(
    draw: Drawing, path: str | Path | None, loggers: Iterable[object], tag: str, step: int = 0
) -> Path | None:
    """The full-size PNG to ``path`` (if given) and the card to TensorBoard as ``tag`` (if it
    is among the ``loggers``); each drawn only where it goes."""
    loggers = list(loggers)
    if tensorboards(loggers):
        log_png(loggers, tag, card_png(draw), step)
    return save_png(draw(card=False), path) if path is not None else None


def confusion_matrix_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    title: str = "Confusion matrix",
    *,
    card: bool = False,
) -> Figure:
    """Counts in the cells; colour is the row share, so rare and common classes read alike.
    A card has no colour bar; beyond :data:`CARD_CLASSES` classes it lists the confusions."""
    matrix = np.asarray(matrix, dtype=np.int64)
    k = len(class_names)
    if card and k > CARD_CLASSES:
        return top_confusions_figure(matrix, class_names, title)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    if card:
        fig, cells, size = _confusion_card(matrix, class_names, title)
    else:
        side = min(max(5.0, 0.55 * k + 2.5), 16.0)  # 100 classes: a pattern, not numbers
        fig = new_figure(side + 1.0, side)
        cells = matrix if k <= 20 else None  # beyond 20 the numbers no longer fit their cells
        size = 9 if k <= 10 else 6
    ax = fig.axes[0] if fig.axes else fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto" if card else None)
    if not card:
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
        ticks = 10 if k <= 20 else 5
        ax.set_xticks(range(k), class_names, rotation=45 if k <= 20 else 90, ha="right")
        ax.tick_params(labelsize=ticks)
        ax.set_yticks(range(k), class_names)
        ax.set(xlabel="predicted", ylabel="true", title=title)
    if cells is not None:
        for (i, j), count in np.ndenumerate(cells):
            color = "white" if share[i, j] > 0.5 else "black"
            text = str(count) if cells.dtype.kind == "i" else f"{count:.0f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size, color=color)
    return fig


def _confusion_card(
    matrix: np.ndarray, class_names: Sequence[str], title: str
) -> tuple[Figure, np.ndarray, float]:
    """The card's figure and axes, what its cells say and at what size: the counts if they fit
    at :data:`CARD_SMALL` pt or more, else each cell's percent of its true class. Laid out by
    hand, in pixels: the cells are wider than high, the column names take turns above and below
    the matrix (so each may be two cells wide) and the corner says which way is true."""
    k = len(class_names)
    label_px = max(text_px(name, CARD_SMALL) for name in class_names)
    left = label_px + 6
    cell_w = (CARD_PX - left - 4) / k
    cells: np.ndarray = matrix
    digits = len(str(int(matrix.max())))
    if 0.64 * digits * CARD_SMALL * DPI / 72 > 0.92 * cell_w:  # the counts do not fit: percents
        cells = 100.0 * matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        digits = 3 if (cells >= 99.5).any() else 2
        title += " (cells: % of the true class)"
    fig = card_figure(layout=None)
    top = card_title(fig, title) + LINE_PX
    bottom = LINE_PX + 2
    cell_h = (CARD_HEIGHT - top - bottom) / k
    digit_px = min(0.92 * cell_w / (0.64 * digits), (cell_h - 2) / 0.73)  # wide, and high
    size = min(CARD_TEXT, digit_px * 72 / DPI)  # (0.64 and 0.73 em: a DejaVu digit)
    h = CARD_HEIGHT
    ax = fig.add_axes((left / CARD_PX, bottom / h, cell_w * k / CARD_PX, cell_h * k / h))
    ax.set_yticks(range(k), class_names)
    ax.set_xticks([])
    ax.tick_params(length=2, pad=2)
    corners = ("pred →", "true ↓")  # at the left of the names below, and above
    for j, name in enumerate(_column_names(class_names, left, cell_w, corners)):
        above = j % 2 == 1  # even columns named below, odd ones above
        ax.annotate(name, (j, -0.5 if above else k - 0.5),
                    xytext=(0, 1 if above else -1), textcoords="offset points", ha="center",
                    va="bottom" if above else "top", fontsize=CARD_SMALL)  # fmt: skip
    fig.text(2 / CARD_PX, 1 - (top - 2) / h, corners[1], fontsize=CARD_SMALL, va="bottom")
    fig.text(2 / CARD_PX, (bottom - 2) / h, corners[0], fontsize=CARD_SMALL, va="top")
    return fig, cells, size


def _column_names(
    names: Sequence[str], left: float, cell_w: float, corners: tuple[str, str]
) -> list[str]:
    """``names`` over columns ``cell_w`` px wide from ``left``, in turns below and above, each
    as long as its neighbours on its side (two columns away), the card's edges and the
    ``corners`` (the texts at the left of each side) leave it."""
    widths = [text_px(n, CARD_SMALL) for n in names]
    centers = [left + cell_w * (j + 0.5) for j in range(len(names))]
    corner = [text_px(c, CARD_SMALL) + 6 for c in corners]
    room = [2 * min(c - corner[j % 2], CARD_PX - 2 - c) for j, c in enumerate(centers)]
    for j in range(len(names) - 2):  # a pair on one side: the longer one gives way
        spare = 2 * (2 * cell_w - 4) - widths[j] - widths[j + 2]
        if spare < 0:
            longer = j if widths[j] > widths[j + 2] else j + 2
            widths[longer] = max(widths[longer] + spare, 2 * cell_w - 4)
    return [shorten(n, min(r, w)) for n, r, w in zip(names, room, widths, strict=True)]


def top_confusions_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """A card's confusion matrix of too many classes for their names and counts to fit: as
    many of its largest off-diagonal cells as the card holds, each its true class over "→ the
    predicted one", with the count and its share of the true class."""
    matrix = np.asarray(matrix, dtype=np.int64)
    rows = matrix.sum(axis=1)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    fig = card_figure(layout=None)
    entry_px = 2 * 13 + 4  # two lines
    ranked = np.argsort(off, axis=None, kind="stable")[::-1][:20]
    pairs = [divmod(int(ix), len(class_names)) for ix in ranked if off.flat[ix]]

    def head(shown: int) -> str:
        return f"{title}: its {shown} most frequent confusions ({len(class_names)} classes)"

    heading = head(len(pairs)) if pairs else f"{title}: no confusions"
    while (fits := (CARD_HEIGHT - title_px(heading)) // entry_px) < len(pairs):
        pairs, heading = pairs[:fits], head(fits)
    top = card_title(fig, heading)

    def at(y_px: float) -> float:  # figure fraction of a height in pixels from the top
        return 1 - y_px / CARD_HEIGHT

    for i, (t, p) in enumerate(pairs):
        y = top + i * entry_px
        share = off[t, p] / max(rows[t], 1)
        count = f"{off[t, p]:,} ({share:.0%})"
        width = CARD_PX - 30 - text_px(count, CARD_SMALL)
        text = dict(va="top", fontsize=CARD_SMALL)
        fig.text(8 / CARD_PX, at(y), shorten(class_names[t], width - 8), **text)
        fig.text(20 / CARD_PX, at(y + 13), "→ " + shorten(class_names[p], width - 30),
                 color=WRONG, **text)  # fmt: skip
        fig.text(1 - 8 / CARD_PX, at(y), count, ha="right", **text)
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
    rows: Sequence[Mapping], overall: float, title: str, most: int = 20, *, card: bool = False
) -> Figure:
    """Accuracy per class as bars, worst at the top, each with what it is most often mistaken
    for; beyond ``most`` classes only the ``most`` worst, so 100 classes stay readable. A card
    holds the worst that fit (10 under two title lines), each accuracy by its class name, to
    leave room for the mistake."""
    scored = sorted((r for r in rows if r["acc"] is not None), key=lambda r: r["acc"])[:most]
    small = CARD_SMALL if card else 8
    if card:
        note = f" (→ most often mistaken for; dashed: all, {overall:.1%})"
        shown, title = len(scored), title + note
        while (fits := (CARD_HEIGHT - title_px(title) - 22) // 14) < shown:  # bars of 14 px
            shown, title = fits, f"{title.removesuffix(note)}, the {fits} worst here{note}"
        scored = scored[:shown]
        fig = card_figure()
    else:
        fig = new_figure(9.0, 1.2 + 0.32 * max(len(scored), 1))
    ax = fig.add_subplot()
    y = np.arange(len(scored))[::-1]
    accs = [r["acc"] for r in scored]
    colors = [RIGHT if a >= overall else WRONG for a in accs]
    ax.barh(y, accs, color=colors, height=0.7)
    names = [f"{r['class']} {r['acc']:.0%}" if card else r["class"] for r in scored]
    ax.set_yticks(y, names, fontsize=small if card else 9)
    ax.axvline(overall, color="black", lw=1, ls="--", label=f"all classes {overall:.1%}")
    for yi, r in zip(y, scored, strict=True):
        note = "" if card else f"{r['acc']:.1%}  "
        if r.get("most_confused_with"):
            note += f"→ {r['most_confused_with']} ({r['most_confused_share']:.0%})"
        box = dict(fc="white", ec="none", pad=0.5, alpha=0.8) if card else None  # over the line
        ax.text(r["acc"] + 0.01, yi, note.strip(), va="center", fontsize=small, bbox=box)
    if card:  # no legend (it would cover a note) nor axis label: the title says them
        ax.set(xlim=(0, 1.7), ylim=(-0.6, len(scored) - 0.4))
        ax.set_xticks([0, 0.5, 1.0], ["0", "50%", "100%"])
        ax.tick_params(axis="y", length=0, pad=2)
        card_title(fig, title)
    else:
        ax.set(xlim=(0, 1.25), xlabel="accuracy (→ the class it is most often mistaken for)")
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        ax.set_title(title, fontsize=11)
        ax.legend(loc="lower right", fontsize=small)
    return fig


def image_grid_figure(
    images: np.ndarray,
    captions: Sequence[str],
    frame_colors: Sequence[str] | None = None,
    title: str = "",
    ncols: int = 8,
    scale: int = 3,
    *,
    card: bool = False,
) -> Figure:
    """(N, H, W, 3) uint8 images, captioned and optionally framed, in one mosaic (one axes per
    image would take many times as long to draw), enlarged by repeating pixels: at 32x32 any
    smoothing would invent detail the model never saw. A card: see :func:`_grid_card`."""
    if card:
        return _grid_card(images, captions, frame_colors, title)
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
            mosaic[top : top + h + 2 * frame, left : left + w + 2 * frame] = _rgb(colors[i])
        big = images[i].repeat(scale, axis=0).repeat(scale, axis=1)
        mosaic[top + frame : top + frame + h, left + frame : left + frame + w] = big
        x = left + frame + w / 2
        ax.text(x, top - 3, captions[i], ha="center", va="bottom", fontsize=7, color=colors[i])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 4 / (mosaic.shape[0] + title_h), va="top", fontsize=11)
    return fig


def _grid_card(
    images: np.ndarray, captions: Sequence[str], frame_colors: Sequence[str] | None, title: str
) -> Figure:
    """The card of an image grid: two columns of images 48 px high (1.5x, nearest pixel), each
    captioned beside it, as many rows as fit; the images picked evenly over the grid (the
    mistakes come sorted by class), drawn 1:1 onto the card's pixels."""
    total, side = len(images), 48
    frame = 2 if frame_colors else 0
    entry_h, entry_w = side + 2 * frame + 2, CARD_PX // 2
    shown, heading = total, title
    while (fits := 2 * ((CARD_HEIGHT - title_px(heading)) // entry_h)) < shown:  # two a row
        shown = fits
        heading = f"{title}: {shown} of them here" if title else f"{shown} of {total}"
    title = heading
    fig = card_figure(layout=None)
    top = card_title(fig, title) if title else 0
    mosaic = np.full((CARD_HEIGHT - top, CARD_PX, 3), 255, dtype=np.uint8)
    ax = fig.add_axes((0.0, 0.0, 1.0, mosaic.shape[0] / CARD_HEIGHT))
    picks = np.linspace(0, total - 1, shown).round().astype(int)
    rows, cols = ((np.arange(side) * images.shape[k]) // side for k in (1, 2))
    for n, i in enumerate(picks):
        r, c = divmod(n, 2)
        y, x = r * entry_h, c * entry_w + 4
        color = frame_colors[i] if frame_colors else "black"
        if frame:
            mosaic[y : y + side + 2 * frame, x : x + side + 2 * frame] = _rgb(color)
        mosaic[y + frame : y + frame + side, x + frame : x + frame + side] = images[i][rows][
            :, cols
        ]
        left = x + side + 2 * frame + 5
        caption = "\n".join(
            shorten(s, entry_w - (left - c * entry_w) - 2) for s in captions[i].split("\n")
        )
        ax.text(left, y + frame + side / 2, caption, va="center", fontsize=CARD_SMALL, color=color)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    return fig


def _rgb(color: str) -> list[int]:
    return [int(color[k : k + 2], 16) for k in (1, 3, 5)]


def prediction_grid_figure(
    images: np.ndarray,
    targets: Sequence[int],
    preds: Sequence[int],
    class_names: Sequence[str],
    title: str = "",
    *,
    card: bool = False,
) -> Figure:
    """Test images framed green (right) or red (wrong), captioned with the prediction."""
    captions, colors = [], []
    for t, p in zip(targets, preds, strict=True):
        right = t == p
        captions.append(class_names[p] if right else f"{class_names[p]}\n(is {class_names[t]})")
        colors.append(RIGHT if right else WRONG)
    return image_grid_figure(images, captions, colors, title, card=card)


def misclassified_figure(
    images: np.ndarray,
    targets: Sequence[int],
    preds: Sequence[int],
    confidences: Sequence[float],
    class_names: Sequence[str],
    title: str = "",
    *,
    card: bool = False,
) -> Figure:
    """Mistakes with their true label and what the model said, with its confidence (a card:
    as the prediction grid says it, "said 93%" over "(is true)", to fit its narrower cells)."""
    form = "{p} {c:.0%}\n(is {t})" if card else "true: {t}\npred: {p} {c:.0%}"
    captions = [
        form.format(t=class_names[t], p=class_names[p], c=c)
        for t, p, c in zip(targets, preds, confidences, strict=True)
    ]
    return image_grid_figure(images, captions, None, title, card=card)


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
    history: Mapping[str, Curve], title: str = "", train_acc: str = "train", *, card: bool = False
) -> Figure:
    """Loss and accuracy per epoch, train and val side by side; missing metrics are left out.
    ``train_acc`` names the train accuracy (with MixUp/CutMix: against the dominant label)."""
    fig = card_figure() if card else new_figure(10, 4)
    if title:
        if card:
            card_title(fig, title)
        else:
            fig.suptitle(title)
    panels = (
        ("loss", (("train/loss_epoch", "train"), ("val/loss", "val"))),
        ("accuracy", (("train/acc", train_acc), ("val/acc", "val"))),
    )
    legends = []
    for ax, (ylabel, series) in zip(fig.subplots(1, 2), panels, strict=True):
        for key, label in series:
            if points := history.get(key):
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        labels = ax.get_legend_handles_labels()[1]
        if labels and not (card and labels in legends):  # a card says the same once
            ax.legend(**(dict(handlelength=1.2, borderpad=0.3) if card else {}))
            legends.append(labels)
        _epoch_axes(ax, ylabel)
        if card:
            ax.yaxis.get_major_locator().set_params(nbins=4)
            ax.tick_params(pad=1, length=2)
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
