"""``python -m cifar_lightning.summary model=NAME``: what a net costs and what it sees.

Prints torchinfo's layer table (shapes, kernels, parameters, multiply-adds), the trainable
parameters and multiply-adds per 32x32 image (the figures the seed READMEs quote from torchinfo)
and the receptive field, layer by layer (tools/receptive_field.py). Nothing is trained or written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import astuple

import torchinfo
from rich.console import Console
from rich.table import Table

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.config import build, compose_for_tool
from cifar_lightning.tools.receptive_field import receptive_field
from cifar_lightning.training.classifier import ImageClassifier

COLUMNS = ("output_size", "kernel_size", "num_params", "mult_adds")


def show(model: ImageClassifier, depth: int, console: Console) -> None:
    stats = torchinfo.summary(
        model.net, (1, 3, 32, 32), col_names=COLUMNS, col_width=16, depth=depth, verbose=0
    )
    print(stats)  # plain: torchinfo lays the table out itself, wider than a default console
    rf = receptive_field(model.net)
    table = Table(title="Receptive field, layer by layer", title_justify="left")
    for column in ("layer", "type", "kernel", "stride", "dilation", "field (px)", "jump (px)"):
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for layer in rf.layers:  # LayerField's fields are the columns, in order
        table.add_row(*map(str, astuple(layer)))
    console.print(table)
    beyond = " (more than the 32 px image)" if rf.size > 32 else ""
    console.print(f"[bold]{type(model).__name__}[/bold]")
    console.print(f"  trainable parameters      {model.num_parameters:,}")
    console.print(f"  multiply-adds per image   {stats.total_mult_adds / 1e6:.2f} M")
    console.print(
        f"  receptive field           {rf.size} x {rf.size} px{beyond}: one unit of the last "
        "spatial feature map"
    )


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(argv):
        print(
            __doc__.strip() + "\n\nArguments: model=NAME (conf/model/), experiment=NAME, depth=N."
        )
        return
    with exit_on_user_error():
        cfg, _ = compose_for_tool(argv, "summary")
        # Piped output gets rich's 80 columns by default: too narrow for layer names.
        console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
        show(build(cfg.model, "model"), cfg.depth, console)


if __name__ == "__main__":
    main()
