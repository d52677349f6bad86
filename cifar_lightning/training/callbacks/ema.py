"""``ema.enabled=true``: an exponential moving average of the weights, for everything but the
training step itself.

``ema ← decay·ema + (1 - decay)·weights`` after every optimizer step averages out the noise of
the last ~1/(1 - decay) steps (1,000 at 0.999), which the raw weights carry until the learning
rate has decayed. With ``warmup`` the decay starts low and grows, ``min(decay, (1 + t) /
(10 + t))`` after ``t`` steps (TensorFlow's ``ExponentialMovingAverage(num_updates=t)``): the
random initial weights should not weigh on the average for the next thousand steps.

This is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (2.6), which keeps a
copy of the LightningModule (torch's ``AveragedModel``), swaps it in for validation, copies it
into the model when fit ends, and saves it as the checkpoint's ``state_dict`` (the raw
weights as ``current_model_state``), so the best checkpoint is chosen by the EMA's val/acc,
the test, ``evaluate``, ``predict`` and ``export`` all use the EMA, and a resumed run
continues both. Three changes:

- The update is ours: ``AveragedModel.update_parameters`` reads its update counter back to the
  host twice a step (``bool(n_averaged == 0)``), a wait for the GPU; here the decay comes from
  the trainer's step count and the update is one fused ``lerp`` per dtype, with no read-back.
  The average starts from the initial weights (as timm's does; the warm-up forgets them fast).
- The copy lives on the training device (Lightning makes it in ``setup``, before the model is
  moved, which would leave it on the CPU), in the net's memory layout (``speed.channels_last``).
- Loading a checkpoint outside fit (the test of the best checkpoint) keeps the EMA weights;
  Lightning's would load the raw ones back into the model being tested.
- When fit ends the two are swapped, not copied: the model leaves fit with the EMA (the test
  of the last weights), and the raw weights stay here for the ``last.ckpt`` a ModelCheckpoint
  still owes saves in its own ``on_train_end``; with a copy, that file would hold the EMA as
  the raw weights too, and a run continued from it (``resume=`` with more epochs) would train
  on from the EMA.

BatchNorm: running means and variances are floating-point buffers and are averaged like the
weights (as timm's ``ModelEmaV3`` does by default); integer buffers (``num_batches_tracked``)
and flags are copied.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


def ema_decay(decay: float, step: int, warmup: bool) -> float:
    """The decay of the update after ``step`` optimizer steps."""
    return min(decay, (1 + step) / (10 + step)) if warmup else decay


class EMAWeights(WeightAveraging):
    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay={decay} must be in (0, 1)")
        super().__init__(use_buffers=True)
        self.decay, self.warmup = decay, warmup

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._device = trainer.strategy.root_device
        self._fit_ended = False
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks after this one may have changed the layout (speed.channels_last) since the
        # copy was made: follow it, so that each update is a plain elementwise pass.
        for average, current in self._pairs(pl_module):
            if average.stride() != current.stride():
                average.data = torch.empty_like(current).copy_(average)

    def _pairs(self, pl_module: L.LightningModule) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert self._average_model is not None
        module = self._average_model.module
        averages = itertools.chain(module.parameters(), module.buffers())
        currents = itertools.chain(pl_module.parameters(), pl_module.buffers())
        return list(zip(averages, currents, strict=True))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if trainer.global_step > self._latest_update_step:  # an optimizer step was taken
            self.update(pl_module, ema_decay(self.decay, trainer.global_step, self.warmup))
            self._latest_update_step = trainer.global_step

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule, decay: float) -> None:
        floats, others = ([], []), ([], [])
        for average, current in self._pairs(pl_module):
            group = floats if average.is_floating_point() else others
            group[0].append(average)
            group[1].append(current.detach())
        if floats[0]:
            torch._foreach_lerp_(floats[0], floats[1], 1.0 - decay)
        if others[0]:
            torch._foreach_copy_(others[0], others[1])
        self._average_model.n_averaged += 1  # on the device: no read-back

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._swap_models(pl_module)  # the model: the EMA; the average model: the raw weights
        self._fit_ended = True

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._fit_ended:
            return super().on_save_checkpoint(trainer, pl_module, checkpoint)
        # After fit the roles are swapped: state_dict (the model's) is already the EMA. The raw
        # weights replace it by name in current_model_state; the metric states (not parameters
        # or buffers) are the model's own, as Lightning's layout has them.
        module = self._average_model.module
        raw = dict(itertools.chain(module.named_parameters(), module.named_buffers()))
        state = checkpoint["state_dict"]
        current = {k: raw[k].detach() if k in raw else v for k, v in state.items()}
        checkpoint["current_model_state"] = current
        checkpoint["averaging_state"] = {"n_averaged": self._average_model.n_averaged.clone()}

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: restore both copies
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def updates(self) -> int | None:
        """How many updates the average has had (a host read: for the run's record)."""
        return int(self._average_model.n_averaged) if self._average_model is not None else None
