"""Calibration: the figures against their definitions, and a temperature that fixes an
over-confident model without changing what it predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_lightning.training.calibration import (
    BINS,
    calibration,
    fit_temperature,
    reliability_bins,
)


def overconfident(n: int = 4000, k: int = 10, seed: int = 0):
    """Logits whose softmax is right about 70% of the time but says ~99%."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, k, (n,), generator=g)
    guess = torch.where(
        torch.rand(n, generator=g) < 0.7, targets, torch.randint(0, k, (n,), generator=g)
    )
    logits = torch.randn(n, k, generator=g) + 8.0 * F.one_hot(guess, k)
    return logits, targets


def direct_ece(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """ECE and MCE by their definitions, with plain loops."""
    probs = logits.softmax(dim=1).numpy()
    conf, pred, y = probs.max(1), probs.argmax(1), targets.numpy()
    ece, mce = 0.0, 0.0
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            gap = abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
            ece += inside.mean() * gap
            mce = max(mce, gap)
    return ece, mce


def test_figures_match_their_definitions():
    logits, targets = overconfident(n=2000)
    scores = calibration(logits, targets)
    ece, mce = direct_ece(logits, targets)
    assert scores["ece"] == pytest.approx(ece, abs=1e-4)
    assert scores["mce"] == pytest.approx(mce, abs=1e-4)
    assert scores["nll"] == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-5)
    probs = logits.softmax(dim=1)
    brier = ((probs - F.one_hot(targets, 10)) ** 2).sum(1).mean()
    assert scores["brier"] == pytest.approx(float(brier), rel=1e-5)
    bins = reliability_bins(logits, targets)
    assert sum(bins["images"]) == 2000 and len(bins["accuracy"]) == BINS
    assert bins["images"][-1] > 1500 and bins["accuracy"][-1] == pytest.approx(0.73, abs=0.05)


def test_a_fitted_temperature_fixes_an_overconfident_model_and_keeps_its_predictions():
    fit_logits, fit_targets = overconfident(seed=1)
    test_logits, test_targets = overconfident(seed=2)
    temperature = fit_temperature(fit_logits, fit_targets)
    before = calibration(test_logits, test_targets)
    after = calibration(test_logits, test_targets, temperature)
    assert temperature > 2  # softer: it was far too sure
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"]
    assert torch.equal((test_logits / temperature).argmax(1), test_logits.argmax(1))
    # The NLL is at its minimum at the fitted temperature.
    nll = [
        calibration(fit_logits, fit_targets, t)["nll"]
        for t in temperature * np.array([0.9, 1, 1.1])
    ]
    assert nll[1] <= min(nll[0], nll[2])
