"""The theoretical receptive field of a net, read from the layers its forward pass runs.

Hooks record conv and pooling layers in call order; ``rf += (kernel - 1) * dilation * jump`` and
``jump *= stride`` grow the field up to the first layer that ends the spatial map (global pooling,
flatten, linear): the field of one unit of the last spatial feature map, as CNN papers and the
seed READMEs quote it. A residual branch runs after the input it adds to, so the chain follows
the longest path, which sets the field. Layers called through ``torch.nn.functional`` are unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
