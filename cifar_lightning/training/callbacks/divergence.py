"""Stop at a NaN/inf loss — naming the step and learning rate — and never checkpoint it.

Once the loss is NaN so are the weights: further steps burn time, and a checkpoint would
overwrite ``last.ckpt`` with garbage. Reading a GPU loss is a host sync that stalls the kernel
queue, so each step only records the first bad step on the device; the record is read every
``check_every_n_steps`` steps (by default when Lightning syncs to log anyway), at epoch ends
and before every checkpoint (on a CPU too: one code path). A fault is caught at most that
many steps late, with the step it happened at, and never after a checkpoint of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from cifar_lightning.errors import TrainingDiverged


class StopOnNonFiniteLoss(Callback):
    def __init__(self, check_every_n_steps: int | str = 50) -> None:
        """``check_every_n_steps="auto"``: on the steps the loggers write (the Trainer's
        ``log_every_n_steps`` as it is then: ``auto`` sets it at train start)."""
        if check_every_n_steps != "auto" and int(check_every_n_steps) < 1:
            raise ValueError(f"check_every_n_steps={check_every_n_steps} must be at least 1")
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # step index, -1 while all is well
        self._bad_loss: torch.Tensor | None = None
        self._seen: dict[int, tuple[int, float | None]] = {}  # step -> (epoch, lr) since last check
        self._step = 0
        self._last_good_step: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        self._step = trainer.global_step
        lr = float(trainer.optimizers[0].param_groups[0]["lr"]) if trainer.optimizers else None
        self._seen[self._step] = (trainer.current_epoch, lr)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # the step was skipped
        loss = loss.detach().float()
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), device=loss.device)
        first_fault = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(first_fault, self._step, self._first_bad)
        self._bad_loss = torch.where(first_fault, loss, self._bad_loss)
        every = self.check_every_n_steps
        every = trainer.log_every_n_steps if every == "auto" else int(every)
        if (self._step + 1) % every == 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Raising here aborts the save before anything is written: last.ckpt stays good.
        self.check(trainer)
        if not all_finite(pl_module):
            raise TrainingDiverged(
                f"the weights became NaN or infinite by step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}), though the loss was still finite.",
                fix=self._fix(trainer),
            )
        self._last_good_step = trainer.global_step

    def check(self, trainer: L.Trainer) -> None:
        """Raise if any step since the last check had a non-finite loss (one host sync)."""
        if self._first_bad is None:
            return
        step = int(self._first_bad)
        if step < 0:
            self._seen.clear()
            return
        value = float(self._bad_loss)  # type: ignore[arg-type]
        epoch, lr = self._seen.get(step, (trainer.current_epoch, None))
        lr_text = f", lr {lr:.4g}" if lr is not None else ""
        raise TrainingDiverged(
            f"training diverged: the loss became {'nan' if math.isnan(value) else value} at "
            f"step {step} (epoch {epoch}{lr_text}).",
            fix=self._fix(trainer),
        )

    def _fix(self, trainer: L.Trainer) -> str:
        kept = [p for c in trainer.checkpoint_callbacks if (p := getattr(c, "last_model_path", ""))]
        where = "no checkpoint had been saved yet. "
        if kept and self._last_good_step is not None:
            where = f"the last good checkpoint, {kept[0]} (step {self._last_good_step}), is kept. "
        return (
            f"{where}Lower the learning rate (optim.lr), add gradient clipping "
            "(e.g. trainer.gradient_clip_val=1.0), or check the data; then train again."
        )


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter and buffer is finite (one host sync for all of them)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
