"""Numbers as the terminal shows them: metrics to 4 significant digits, one way everywhere.

Lightning's test table printed each metric's float as Python repr writes it
(``0.9024045467376709``); :func:`print_test_results` is that table, rounded, and the run's
results line and ``evaluate``'s table use :func:`significant` too. Files (``metrics.json``,
``eval.json``) keep full precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import get_console
from rich.console import Console
from rich.table import Table

from cifar_lightning.training.callbacks.progress import METRIC_FORMAT


def significant(value: Any) -> str:
    """``0.1`` for 0.10000000149011612, ``2.313`` for 2.312882423400879: 4 significant digits."""
    value = value.item() if hasattr(value, "item") else value
    return f"{value:{METRIC_FORMAT}}" if isinstance(value, float) else str(value)


def metrics_line(metrics: Mapping[str, Any]) -> str:
    """``test/acc 0.09375, val/acc_best 0.1094``."""
    return ", ".join(f"{name} {significant(value)}" for name, value in metrics.items())


def print_test_results(
    results: Sequence[Mapping[str, Any]], console: Console | None = None
) -> None:
    """What ``trainer.test(verbose=True)`` prints (one column per dataloader), to 4 digits."""
    loaders = [{k.split("/dataloader_idx_")[0]: v for k, v in r.items()} for r in results]
    if not loaders:
        return
    table = Table()
    table.add_column("Test metric", style="cyan")
    for i in range(len(loaders)):
        table.add_column(f"DataLoader {i}" if len(loaders) > 1 else "Value", justify="right")
    for name in sorted({name for metrics in loaders for name in metrics}):
        table.add_row(name, *(significant(m[name]) if name in m else "" for m in loaders))
    (console or get_console()).print(table)
