"""``speed.*`` on ``model.net``, as a callback to reach the net wherever the Trainer puts it
(the other speed switches are ``trainer.precision`` and ``trainer.benchmark``).

- ``channels_last``: NHWC, the layout tensor-core convolutions use; in NCHW each conv pays for
  transposes under bf16 autocast.
- ``compile``: ``true``, a mode or a dict of ``torch.compile`` arguments, in place on the net
  only: logging stays eager, checkpoint keys stay the plain net's. ``dynamic=False``: each
  batch shape gets its own, faster graph. Waits for ``on_fit_start``, after the model
  summary's one-image batch, so that shape gets no graph.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cifar_lightning.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_options(value: Any) -> dict[str, Any] | None:
    """``speed.compile`` as ``torch.compile`` keyword arguments; None means do not compile."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None or value is False:
        return None
    if value is True:
        return {"dynamic": False}
    if isinstance(value, str) and value in COMPILE_MODES:
        return {"dynamic": False, "mode": value}
    if isinstance(value, dict):
        return {"dynamic": False, **value}
    raise ConfigError(
        f"speed.compile={value!r} is not a compile setting.",
        fix="use speed.compile=false, speed.compile=true, or a mode: "
        f"speed.compile={', speed.compile='.join(COMPILE_MODES)}",
    )


class SpeedSwitches(Callback):
    """Applies ``speed.channels_last`` and ``speed.compile`` to ``pl_module.net``."""

    def __init__(self, channels_last: bool = False, compile: Any = False) -> None:
        self.channels_last = channels_last
        self.compile = compile_options(compile)
        self._compiled = False

    def layout(self, net: nn.Module) -> nn.Module:
        # In place: the parameters keep their identity, so an earlier optimizer still holds them.
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def compiled(self, net: nn.Module) -> nn.Module:
        if self.compile is not None:
            net.compile(**self.compile)  # in place: the checkpoint keeps the plain net's keys
        return net

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.layout(pl_module.net)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._compiled:
            self.compiled(pl_module.net)
            self._compiled = True
