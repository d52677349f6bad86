"""Can a model's confidence be trusted? Calibration figures of a pass's logits, and the one
number that fixes most of an over-confident net: a temperature dividing its logits.

ECE (expected calibration error): over 15 equal-width confidence bins, the image-weighted mean
gap between a bin's accuracy and its mean top-1 confidence; MCE: the largest gap; NLL: the mean
negative log-likelihood of the true class (no label smoothing); Brier: the mean squared
distance between the probabilities and the one-hot label, summed over classes. torchmetrics
computes ECE and MCE; the reliability diagram shows the bins themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchmetrics.functional.classification import multiclass_calibration_error

from cifar_lightning.training import figures

BINS = 15


def calibration(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> dict:
    """ECE, MCE, NLL and Brier score of ``logits / temperature`` against ``targets``."""
    logits, targets = logits.float() / temperature, targets.long()
    probs, k = logits.softmax(dim=1), logits.shape[1]
    error = dict(num_classes=k, n_bins=BINS, validate_args=False)
    one_hot = F.one_hot(targets, k).float()
    return {
        "ece": float(multiclass_calibration_error(probs, targets, norm="l1", **error)),
        "mce": float(multiclass_calibration_error(probs, targets, norm="max", **error)),
        "nll": float(F.cross_entropy(logits, targets)),
        "brier": float(((probs - one_hot) ** 2).sum(dim=1).mean()),
    }


def reliability_bins(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, list[Any]]:
    """Per confidence bin: images, mean confidence and accuracy (None for an empty bin)."""
    confidence, preds = logits.float().softmax(dim=1).max(dim=1)
    correct = (preds == targets).float()
    index = (confidence * BINS).long().clamp(max=BINS - 1)
    counts = torch.bincount(index, minlength=BINS)
    sums = [torch.bincount(index, weights=w, minlength=BINS) for w in (confidence, correct)]
    mean = [torch.where(counts > 0, s / counts.clamp(min=1), torch.nan) for s in sums]
    return {
        "images": counts.tolist(),
        "confidence": [None if np.isnan(v) else round(v, 4) for v in mean[0].tolist()],
        "accuracy": [None if np.isnan(v) else round(v, 4) for v in mean[1].tolist()],
    }


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature that minimises the NLL of ``logits / T`` (Guo et al. 2017): L-BFGS on
    log T, so T stays positive. Accuracy is unchanged by any T; only confidence moves."""
    logits, targets = logits.detach().float(), targets.long()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def reliability_figure(
    bins: dict[str, list[Any]], scores: dict[str, float], title: str, *, card: bool = False
) -> Figure:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), the gap
    shaded, and how many images each bin holds below; a card has no room for the counts, and
    the scores and legend go beside the plot."""
    fig = figures.card_figure(layout=None) if card else figures.new_figure(6.0, 6.5, layout=None)
    if card:
        top, bottom = fig.add_subplot(), None
    else:
        top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    width, edges = 1 / BINS, np.arange(BINS) / BINS
    acc = np.array([np.nan if a is None else a for a in bins["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in bins["confidence"]])
    top.bar(edges, np.nan_to_num(acc), width, align="edge", color="#4c72b0", label="accuracy")
    gap_bottom, gap = np.fmin(acc, conf), np.abs(conf - acc)
    top.bar(edges, np.nan_to_num(gap), width, bottom=np.nan_to_num(gap_bottom), align="edge",
            color="#dd8452", alpha=0.5, label="gap to confidence")  # fmt: skip
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfectly calibrated")
    top.set(ylim=(0, 1), ylabel="accuracy in the bin")
    numbers = "\n".join(f"{k.upper()} {v:.4f}" for k, v in scores.items())
    if card:
        title_px = figures.card_title(fig, title)
        top.set(xlim=(0, 1), xlabel="top-1 confidence", xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
        height = figures.CARD_HEIGHT
        fig.subplots_adjust(left=52 / figures.CARD_PX, right=200 / figures.CARD_PX,
                            top=1 - (title_px + 4) / height, bottom=40 / height)  # fmt: skip
        fig.text(212 / figures.CARD_PX, 1 - (title_px + 6) / height, numbers, va="top",
                 family="monospace", fontsize=figures.CARD_SMALL)  # fmt: skip
        fig.legend(*top.get_legend_handles_labels(), loc="lower left", frameon=False,
                   bbox_to_anchor=(206 / figures.CARD_PX, 34 / height), borderaxespad=0,
                   handlelength=1.2, handletextpad=0.5)  # fmt: skip
        return fig
    top.set_title(title)
    top.text(0.03, 0.95, numbers, va="top", family="monospace", transform=top.transAxes)
    top.legend(loc="lower right")
    bottom.bar(edges, bins["images"], width, align="edge", color="#55a868")
    bottom.set(xlim=(0, 1), xlabel="top-1 confidence", ylabel="images")
    fig.subplots_adjust(left=0.13, right=0.97, top=0.93, bottom=0.09, hspace=0.08)
    return fig
