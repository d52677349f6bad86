"""What a run prints to the terminal: the model summary. In process, on Rich consoles of a
chosen width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cifar_lightning.run.config import build
from cifar_lightning.training.callbacks import model_summary


@pytest.fixture(scope="module")
def depthwise():
    from cifar_lightning.run.config import compose_config

    return build(compose_config(["model=depthwise"]).model, "model")


def summary_text(model, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    model_summary.show(model, 2, console)
    return console.export_text()


def test_summary_lists_the_nets_layers_and_their_multiply_adds(depthwise):
    text = summary_text(depthwise, 80)
    assert "net.c1" in text and "DepthwiseNet" in text and "Out shape" in text
    # the loss and the torchmetrics accumulators are not layers of the net
    assert "criterion" not in text and "train_loss" not in text and "Metric" not in text
    # one cost, as `python -m cifar_lightning.summary` words and counts it (test_tools.py)
    assert "19.87 M multiply-adds per image (1 multiply-add = 2 FLOPs)" in text
    assert "FLOPs:" not in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_a_narrow_summary_drops_the_shapes_rather_than_wrap(depthwise):
    text = summary_text(depthwise, 60)
    assert "Out shape" not in text and "[32, 32, 32]" not in text
    assert "Mult-adds" in text and max(len(line) for line in text.splitlines()) <= 60
