"""What a net costs per image, counted one way for every place that shows it.

torchinfo's multiply-adds (the figure the seed READMEs quote): the training run's model summary
and ``python -m cifar_lightning.summary`` both count with :func:`count` and word it with
:data:`MACS` / :func:`format_macs`, so the two never disagree. (Lightning's own summary counts
FLOPs with torch's FlopCounterMode: about twice the figure, and not quite that, as it skips
BatchNorm.)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

MACS = "multiply-adds per image"
MAC_IN_FLOPS = "1 multiply-add = 2 FLOPs"


@dataclass(frozen=True)
class Cost:
    """``total`` multiply-adds of one forward pass; per module (leaf calls summed into every
    module that holds them) and each module's last output shape, without the batch axis."""

    total: int
    stats: Any  # torchinfo's ModelStatistics: its layer table, for the summary tool
    macs: dict[nn.Module, int] = field(default_factory=dict)
    shapes: dict[nn.Module, list[int]] = field(default_factory=dict)


def count(
    net: nn.Module, example: torch.Tensor | None = None, depth: int = 3, **columns: Any
) -> Cost:
    """One forward pass of ``example`` (default one 3x32x32 image) under torchinfo, in eval
    mode (no BatchNorm statistics move) on the net's own device and dtype; every module's
    train/eval mode is as it was afterwards."""
    import torchinfo  # only where a cost is shown: not on every import of the package

    param = next(net.parameters(), None)
    example = torch.zeros(1, 3, 32, 32) if example is None else example
    if param is not None:
        example = example.to(device=param.device, dtype=param.dtype)
    modes = {module: module.training for module in net.modules()}
    try:
        stats = torchinfo.summary(net, input_data=[example], depth=depth, verbose=0, **columns)
    finally:  # torchinfo puts back the root's mode only: a net's frozen BatchNorm would train
        for module, training in modes.items():
            module.training = training
    macs: dict[nn.Module, int] = defaultdict(int)
    shapes: dict[nn.Module, list[int]] = {}
    leaves = [info for info in stats.summary_list if info.is_leaf_layer]
    for info in stats.summary_list:
        if isinstance(info.output_size, list | tuple) and info.output_size:
            shapes[info.module] = list(info.output_size[1:])
    for module in net.modules():
        inside = {id(m) for m in module.modules()}
        macs[module] = sum(info.macs for info in leaves if id(info.module) in inside)
    return Cost(int(stats.total_mult_adds), stats, dict(macs), shapes)


def format_macs(macs: int) -> str:
    """``19.87 M``: millions with two decimals, as the seed READMEs quote them."""
    return f"{macs / 1e6:.2f} M"
