"""What ``cifar-summary`` prints (its command line: cifar_lightning/summary.py): torchinfo's
layer table, the parameters, multiply-adds and receptive field of a net."""

from __future__ import annotations

import sys
from dataclasses import astuple, dataclass

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch import nn

from cifar_lightning.run.config import build
from cifar_lightning.training import cost
from cifar_lightning.training.classifier import ImageClassifier

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_END = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


def _first(value: int | tuple[int, ...]) -> int:
    """Square kernels and strides: the receptive field is quoted for one axis."""
    return value[0] if isinstance(value, tuple) else int(value)


@dataclass(frozen=True)
class LayerField:
    """One conv/pool layer and the field after it."""

    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    rf: int
    jump: int


@dataclass(frozen=True)
class ReceptiveField:
    size: int
    jump: int
    layers: tuple[LayerField, ...]


def receptive_field(net: nn.Module, image_size: int = 32) -> ReceptiveField:
    """Run one zero image through ``net`` and grow the field over the layers it calls."""
    calls: list[tuple[str, nn.Module]] = []
    names = {module: name for name, module in net.named_modules()}
    hooks = [
        m.register_forward_hook(lambda module, _in, _out: calls.append((names[module], module)))
        for m in net.modules()
        if isinstance(m, _SPATIAL + _END)
    ]
    was_training = net.training
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()

    rf, jump, layers = 1, 1, []
    for name, module in calls:
        if isinstance(module, _END):
            break
        kernel, stride = _first(module.kernel_size), _first(module.stride or module.kernel_size)
        dilation = _first(getattr(module, "dilation", 1))
        rf += (kernel - 1) * dilation * jump
        jump *= stride
        layers.append(LayerField(name, type(module).__name__, kernel, stride, dilation, rf, jump))
    return ReceptiveField(rf, jump, tuple(layers))


COLUMNS = ("output_size", "kernel_size", "num_params", "mult_adds")


def show(model: ImageClassifier, depth: int, console: Console) -> None:
    counted = cost.count(model.net, depth=depth, col_names=COLUMNS, col_width=16)
    print(counted.stats)  # plain: torchinfo lays the table out itself, wider than a default console
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
    macs = f"{cost.format_macs(counted.total)} ({cost.MAC_IN_FLOPS})"
    console.print(f"  {cost.MACS}   {macs}")
    console.print(
        f"  receptive field           {rf.size} x {rf.size} px{beyond}: one unit of the last "
        "spatial feature map"
    )


def run(cfg: DictConfig) -> None:
    """The summary of ``cfg.model``, ``cfg.depth`` levels of layers deep."""
    # Piped output gets rich's 80 columns by default: too narrow for layer names.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    show(build(cfg.model, "model"), cfg.depth, console)
