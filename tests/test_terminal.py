"""What a run prints to the terminal: the model summary, log lines under a live progress bar,
and metrics to 4 significant digits. In process, on Rich consoles of a chosen width."""

from __future__ import annotations

import io
import logging
import sys
import types

import pytest
import rich
import torch
from rich.console import Console

from cifar_lightning.run.config import build
from cifar_lightning.run.console import metrics_line, print_test_results, significant
from cifar_lightning.training.callbacks import model_summary
from cifar_lightning.training.callbacks.progress import ProgressBar


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


def test_counting_the_cost_leaves_every_modules_mode_as_it_was(depthwise):
    depthwise.train()
    depthwise.net.c1.eval()  # e.g. a frozen stem
    summary_text(depthwise, 80)
    assert not depthwise.net.c1.training and depthwise.net.c2.training and depthwise.training
    depthwise.train()


def test_a_narrow_summary_drops_columns_rather_than_wrap_them(depthwise):
    text = summary_text(depthwise, 60)
    assert "Out shape" not in text and "[32, 32, 32]" not in text and "Sequential" in text
    text = summary_text(depthwise, 40)  # CI's COLUMNS=40
    assert "Sequential" not in text and "│ 3 │ net.c3   │ 40.8 K │    10.4 M │" in text


def test_log_records_print_above_the_live_bar(monkeypatch):
    """A handler made before the bar (as Hydra's and Lightning's are) writes through Rich's
    proxy while the bar is live, and to its own stream again once it stops."""
    screen, own = io.StringIO(), io.StringIO()
    monkeypatch.setattr(rich, "_console", None)  # the bar reconfigures the global console
    monkeypatch.setattr(sys, "stdout", own)
    handler = logging.StreamHandler(sys.stdout)
    log = logging.getLogger("test_terminal.bar")
    log.addHandler(handler)
    try:
        bar = ProgressBar(console_kwargs={"file": screen, "force_terminal": True, "width": 80})
        testing = types.SimpleNamespace(state=types.SimpleNamespace(fn="test"))
        testing.progress_bar_callback = bar
        bar._init_progress(testing)  # as on_test_start calls it
        bar.progress.add_task("Testing", total=4)
        frame = Console(file=io.StringIO(), width=80, record=True)
        frame.print(bar.progress.get_renderable())
        # short of the last column, where the terminal's ^C echo would wrap (no it/s at 80)
        assert max(map(len, frame.export_text().splitlines())) < 80
        assert "it/s" not in frame.export_text()
        log.warning("Saved last.ckpt")
        bar._stop_progress()
        log.warning("after the bar")
    finally:
        log.removeHandler(handler)
    assert "Saved last.ckpt\n" in screen.getvalue()  # a line of its own, via the console
    assert own.getvalue() == "after the bar\n" and handler.stream is own


def test_metrics_show_4_significant_digits(capsys):
    assert significant(0.10000000149011612) == "0.1"
    assert significant(torch.tensor(2.312882423400879)) == "2.313"
    assert significant(3) == "3"
    assert metrics_line({"test/acc": 0.09375, "val/acc_best": 0.109375}) == (
        "test/acc 0.09375, val/acc_best 0.1094"
    )
    print_test_results([{"test/acc": torch.tensor(0.10000000149011612), "test/nll": 2.3128824}])
    out = capsys.readouterr().out
    assert "0.1 " in out and "2.313" in out and "0.1000000" not in out


def test_the_bar_shows_metrics_not_lightnings_version_stub():
    """Lightning shows a string logger version's last 4 characters (``v_num: wise`` for our
    ``depthwise`` runs); the bar shows the metrics only."""
    logger = types.SimpleNamespace(version="depthwise")
    trainer = types.SimpleNamespace(loggers=[logger], progress_bar_metrics={"val/acc": 0.5})
    assert ProgressBar().get_metrics(trainer, None) == {"val/acc": 0.5}
