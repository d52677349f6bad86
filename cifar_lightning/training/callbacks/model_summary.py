"""The model summary printed when fit starts: the net's layers and what they cost.

Lightning's ``RichModelSummary`` lists every submodule of the LightningModule, so most of its
rows were the loss and the dozen torchmetrics accumulators (0 parameters, ``?`` sizes), its
FLOPs disagreed with ``python -m cifar_lightning.summary``'s multiply-adds, and at 80 columns its
eight columns cut the types and wrapped the shapes. This one shows the net's layers only, costs
them as the summary tool does (training/cost.py), and in a narrow terminal drops columns (the
shapes, then the types, then the costs) rather than wrap or cut them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from torch import nn
from torch.nn.modules.loss import _Loss
from torch.nn.parameter import UninitializedParameter
from torchmetrics import Metric

from cifar_lightning.training import cost

log = logging.getLogger(__name__)

NOT_THE_NET = (Metric, _Loss)  # bookkeeping modules: no parameters, never in the forward pass


def net_layers(model: nn.Module, max_depth: int) -> list[tuple[str, nn.Module]]:
    """``model``'s submodules down to ``max_depth`` dots, without metrics and losses (nor
    anything inside them), in definition order."""
    layers, skipped = [], []
    for name, module in model.named_modules():
        if not name or any(name == s or name.startswith(f"{s}.") for s in skipped):
            continue
        if isinstance(module, NOT_THE_NET):
            skipped.append(name)
        elif name.count(".") < max_depth:
            layers.append((name, module))
    return layers


# Columns a narrow terminal loses first, in this order, before the table wraps or cuts cells.
OPTIONAL = ("Out shape", "Type", "Mult-adds")


def summary_table(
    model: L.LightningModule, max_depth: int, counted: cost.Cost | None, drop: Sequence[str] = ()
) -> Table:
    """Index, name, type, parameters, multiply-adds and output shape per image of each layer,
    less the ``drop`` columns (and the costs when there are none)."""
    rows = []
    for i, (name, module) in enumerate(net_layers(model, max_depth)):
        row = {" ": str(i), "Name": name, "Type": type(module).__name__}
        row["Params"] = get_human_readable_count(sum(p.numel() for p in module.parameters()))
        if counted is not None:
            called = module in counted.shapes  # a layer the forward pass never reached: "-"
            row["Mult-adds"] = get_human_readable_count(counted.macs[module]) if called else "-"
            row["Out shape"] = str(counted.shapes.get(module, "-"))
        rows.append(row)
    headers = [h for h in rows[0] if h not in drop] if rows else []
    table = Table(header_style="bold magenta")
    for header in headers:
        numeric = header in ("Params", "Mult-adds", "Out shape")
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True,
                         style="dim" if header == " " else None)  # fmt: skip
    for row in rows:
        table.add_row(*(row[h] for h in headers))
    return table


def fitting_table(
    model: L.LightningModule, max_depth: int, counted: cost.Cost | None, console: Console
) -> Table:
    """:func:`summary_table` with as few :data:`OPTIONAL` columns dropped as ``console``'s
    width needs (measured by Rich at the width the table wants, not the one it would get)."""
    unbounded = console.options.update_width(10_000)
    for n in range(len(OPTIONAL) + 1):
        table = summary_table(model, max_depth, counted, drop=OPTIONAL[:n])
        if Measurement.get(console, unbounded, table).maximum <= console.width:
            break
    return table


def show(model: L.LightningModule, max_depth: int, console: Console) -> None:
    """Print the summary: the table, as wide as the console allows, then the totals."""
    counted = None
    example = getattr(model, "example_input_array", None)
    try:
        counted = cost.count(model, example[:1] if example is not None else None)
    except Exception as error:  # a summary never stops a run; it just goes without costs
        log.warning("Model summary: multiply-adds not counted (%s: %s)", type(error).__name__,
                    error)  # fmt: skip
    table = fitting_table(model, max_depth, counted, console)
    console.print(table)
    params = [p for p in model.parameters() if not isinstance(p, UninitializedParameter)]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    megabytes = sum(p.numel() * p.element_size() for p in params) / 1e6
    lines = [
        f"[bold]Trainable params[/]: {get_human_readable_count(trainable).strip()}",
        f"[bold]Non-trainable params[/]: {get_human_readable_count(frozen).strip()}",
        f"[bold]Params size[/]: {megabytes:.2f} MB",
    ]
    if counted is not None:
        lines.append(f"[bold]Cost[/]: {cost.format_macs(counted.total)} {cost.MACS} "
                     f"({cost.MAC_IN_FLOPS})")  # fmt: skip
    evaluating = [name for name, m in net_layers(model, 99) if not m.training]
    if evaluating:
        lines.append(f"[bold]Modules in eval mode[/]: {len(evaluating)}")
    for line in lines:
        console.print(line, highlight=False)


class NetSummary(RichModelSummary):
    """Lightning's Rich model summary of the net alone, costed in multiply-adds (see above);
    ``max_depth`` as Lightning's (0: no summary)."""

    def __init__(self, max_depth: int = 2, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._max_depth and trainer.is_global_zero:
            from rich import get_console  # the console Lightning's progress bar draws on

            show(pl_module, self._max_depth if self._max_depth > 0 else 99, get_console())
