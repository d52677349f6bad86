"""Does the model hold up on worse images? Its accuracy on the test images under each CIFAR-10-C
corruption and severity, and the summary figures people compare nets by.

mean corruption accuracy: over every (corruption, severity) cell asked for; mean corruption
error: one minus it (unnormalized: the ImageNet-C normalization by AlexNet has no CIFAR
counterpart); relative drop: (clean - mean corruption accuracy) / clean, clean measured on the
very same images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from cifar_lightning.data.corruptions import FAMILIES, corrupt, load_published, open_published
from cifar_lightning.training import figures
from cifar_lightning.training.tta import tta_logits

log = logging.getLogger(__name__)
Net = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def accuracy(net: Net, images: torch.Tensor, labels: torch.Tensor, prepare: Callable,
             tta: str, device: torch.device, batch_size: int) -> float:  # fmt: skip
    """Top-1 accuracy of ``net`` on uint8 ``images`` (N, 3, H, W), ``prepare`` normalizing."""
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        logits = tta_logits(net, prepare(x.to(device, non_blocking=True)), tta)
        correct += int((logits.argmax(1).cpu() == y).sum())
    return correct / max(len(labels), 1)


def robustness(
    net: Net,
    images: torch.Tensor,
    labels: torch.Tensor,
    prepare: Callable[[torch.Tensor], torch.Tensor],
    names: Sequence[str],
    severities: Sequence[int],
    *,
    seed: int = 0,
    source: Path | None = None,
    tta: str = "none",
    device: torch.device | str = "cpu",
    batch_size: int = 500,
) -> dict[str, Any]:
    """Accuracy per corruption and severity: made here from ``images`` (seeded), or read from
    the CIFAR-10-C files in ``source`` (their first ``len(images)`` pictures per severity)."""
    started, device = time.perf_counter(), torch.device(device)
    run = dict(prepare=prepare, tta=tta, device=device, batch_size=batch_size)
    clean = accuracy(net, images, labels, **run)
    published = open_published(source, list(names)) if source is not None else None
    table: dict[str, list[float]] = {}
    for name in names:
        begun, row = time.perf_counter(), []
        for severity in severities:
            if source is None:
                shown, truth = corrupt(images, name, severity, seed), labels
            else:
                pixels, truth = load_published(published, name, severity, len(images))
                shown, truth = torch.from_numpy(pixels).permute(0, 3, 1, 2), torch.from_numpy(truth)
            row.append(accuracy(net, shown, truth, **run))
        table[name] = row
        log.info("%-17s %s  (%.1f s)", name, " ".join(f"{a:6.1%}" for a in row),
                 time.perf_counter() - begun)  # fmt: skip
    mean = float(np.mean([a for row in table.values() for a in row]))
    families = {
        family: float(np.mean([a for n in members if n in table for a in table[n]]))
        for family, members in FAMILIES.items()
        if any(n in table for n in members)
    }
    return {
        "source": str(source) if source else f"made here, seed {seed}",
        "images": len(images),
        "severities": list(severities),
        "clean_acc": clean,
        "acc": table,
        "corruption_acc": {name: float(np.mean(row)) for name, row in table.items()},
        "family_acc": families,
        "mean_corruption_acc": mean,
        "mean_corruption_error": 1 - mean,
        "relative_drop": (clean - mean) / clean if clean > 0 else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


CARD_ROWS = 7  # corruptions a card lists one by one; beyond, it shows their families


def corruption_figure(result: dict[str, Any], title: str, *, card: bool = False) -> Figure:
    """Accuracy per corruption (rows) and severity (columns), the clean accuracy and each
    row's mean beside them; every cell written out, red to green. A card writes whole percents
    and has no colour bar; beyond :data:`CARD_ROWS` corruptions its rows are their families
    (the mean of their members) and all of them."""
    names, severities = list(result["acc"]), result["severities"]
    columns = ["clean", *(f"s{s}" for s in severities), "mean"]
    rows = {n.replace("_", " "): (result["acc"][n], result["corruption_acc"][n]) for n in names}
    if card and len(names) > CARD_ROWS:
        groups = {f: [n for n in members if n in names] for f, members in FAMILIES.items()}
        groups = {f: members for f, members in groups.items() if members} | {"all": names}
        rows = {
            f"{family} ({len(members)})": (
                list(np.mean([result["acc"][n] for n in members], axis=0)),
                float(np.mean([result["corruption_acc"][n] for n in members])),
            )
            for family, members in groups.items()
        }
    grid = np.array([[result["clean_acc"], *row, mean] for row, mean in rows.values()])
    title = (
        f"{title}\nmean corruption accuracy {result['mean_corruption_acc']:.1%} "
        f"(clean {result['clean_acc']:.1%}, relative drop {result['relative_drop'] or 0:.1%})"
    )
    if card:
        fig = figures.card_figure()
        figures.card_title(fig, title)
    else:
        fig = figures.new_figure(1.0 + 0.95 * len(columns), 1.4 + 0.38 * len(rows))
    ax = fig.add_subplot()
    image = ax.imshow(grid * 100, cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    cell = "{:.0f}" if card else "{:.1f}"
    for (i, j), value in np.ndenumerate(grid * 100):
        ax.text(j, i, cell.format(value), ha="center", va="center",
                fontsize=figures.CARD_SMALL if card else 8,
                color="white" if value < 25 or value > 85 else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.axvline(0.5, color="white", lw=2)
    ax.axvline(len(columns) - 1.5, color="white", lw=2)
    if card:
        ax.tick_params(length=0, pad=2)
        ax.xaxis.tick_top()
    else:
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, label="top-1 accuracy (%)", shrink=0.8)
    return fig
