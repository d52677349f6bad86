"""Lookahead with a warming schedule (airbench's): a few tenths of a point on airbench94, free.

Every ``every`` steps ``slow ← slow + (1 - decay)·(fast - slow); fast ← slow`` for every float
entry of the net's state (BatchNorm statistics too), ``decay = base**every · (step / total)**3``:
early the slow copy just follows, late it averages, much like weight averaging. On the very
last step the weights are set to the slow copy.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


def lookahead_decay(step: int, total: int, every: int, base: float) -> float:
    return base**every * (step / total) ** 3


class Lookahead(L.Callback):
    def __init__(self, every: int = 5, base: float = 0.95) -> None:
        self.every, self.base = every, base
        self.slow: dict[str, torch.Tensor] | None = None

    def _entries(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {k: v for k, v in pl_module.net.state_dict().items() if v.is_floating_point()}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fast = self._entries(pl_module)
        if self.slow is None:  # a fresh run; a resumed one restored it in load_state_dict
            self.slow = {k: v.detach().clone() for k, v in fast.items()}
        else:
            self.slow = {k: v.to(fast[k].device) for k, v in self.slow.items()}

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
        last = step >= total
        if step % self.every and not last:
            return
        decay = 1.0 if last else lookahead_decay(step, total, self.every, self.base)
        for name, fast in self._entries(pl_module).items():
            fast.copy_(self.slow[name].lerp_(fast, 1.0 - decay))

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.slow = state_dict["slow"]
