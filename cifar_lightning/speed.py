"""Speed switches for the net: channels_last memory format and ``torch.compile``.

Both are top-level config keys (``channels_last=true``, ``compile=true``); the other speed
switches are Trainer flags already (``trainer.precision``: bf16 mixed on a GPU by default;
``trainer.benchmark``: cuDNN autotuning, on with ``trainer=gpu``).

- ``channels_last``: the net's weights (and so its activations) in NHWC order, the layout
  tensor-core convolutions use; in NCHW each conv pays for transposes under bf16 autocast.
- ``compile``: ``torch.compile`` on the net (``model.net``), never on the LightningModule, so
  logging and metrics stay eager and the checkpoint's keys stay those of the plain net
  (``nn.Module.compile`` compiles in place). ``true``, a mode (``reduce-overhead``,
  ``max-autotune`` …) or a dict of ``torch.compile`` arguments. Shapes are static
  (``dynamic=False``): the train batch, a smaller last batch and the eval batches each get a
  graph of their own, compiled once, rather than one slower shape-generic graph for all.

Both apply through :class:`SpeedSwitches`, a callback, so they reach the net wherever the
Trainer puts it. Compilation waits for ``on_fit_start``, after the model summary has run its
example batch, so no graph is compiled for that one-image shape.
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
    """``compile=`` as ``torch.compile`` keyword arguments; None means do not compile."""
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
        f"compile={value!r} is not a compile setting.",
        fix="use compile=false, compile=true, or a mode: "
        f"compile={', compile='.join(COMPILE_MODES)}",
    )


def to_channels_last(net: nn.Module) -> nn.Module:
    # In place: the parameters keep their identity, so an optimizer made earlier still holds them.
    return net.to(memory_format=torch.channels_last)


def compile_net(net: nn.Module, options: dict[str, Any]) -> nn.Module:
    net.compile(**options)
    return net


class SpeedSwitches(Callback):
    """Applies ``channels_last`` and ``compile`` to ``pl_module.net``."""

    def __init__(self, channels_last: bool = False, compile: Any = False) -> None:
        if not isinstance(channels_last, bool):
            raise ConfigError(
                f"channels_last={channels_last!r} must be true or false.",
                fix="channels_last=true or channels_last=false",
            )
        self.channels_last = channels_last
        self.compile = compile_options(compile)
        self._compiled = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.channels_last:
            to_channels_last(pl_module.net)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.compile is not None and not self._compiled:
            compile_net(pl_module.net, self.compile)
            self._compiled = True


def speed_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callback for the run's speed switches, or none when all are off."""
    switches = SpeedSwitches(
        channels_last=cfg.get("channels_last", False), compile=cfg.get("compile", False)
    )
    return [switches] if switches.channels_last or switches.compile is not None else []
