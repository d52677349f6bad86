"""SIGTERM or Ctrl-C: finish the step, save ``last.ckpt``, then stop the way Lightning does.

What Lightning 2.6 does on its own: on SIGTERM it sets ``trainer.received_sigterm`` and raises
``SIGTERMException`` at the next batch boundary — of training *or validation* — and calls the
callbacks' ``on_exception``; it saves nothing. Ctrl-C is Python's ``KeyboardInterrupt``, raised
wherever the main thread happens to be, possibly halfway through an optimizer step.

What this adds: the signal is held until the current training step, or the validation run in
progress, is over; a checkpoint is saved right there — the same two states ModelCheckpoint
saves (end of a training batch, end of validation), which Lightning knows how to resume
exactly — and only then is the signal handed to Lightning's own SIGTERM handler, so Lightning
stops the run its usual way. A second Ctrl-C stops at once, without saving.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT)


class CheckpointOnInterrupt(Callback):
    """Saves ``dirpath/filename.ckpt`` at the first clean point after SIGTERM or SIGINT.

    After the run, ``signal`` is the signal that stopped it (or None) and ``saved_path`` /
    ``saved_step`` say what was saved. A plain Callback, not a Lightning ``Checkpoint``: it
    must never be taken for the run's ``trainer.checkpoint_callback`` (the best model).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.signal: int | None = None
        self.saved_path: Path | None = None
        self.saved_step: int | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / f"{self.filename}{self.FILE_EXTENSION}"

    # --- signal handling --------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has registered its SIGTERM handler by now (Trainer._run); we wrap it.
        self.signal, self.saved_path, self.saved_step = None, None, None
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set signal handlers
        self._previous = {s: signal.getsignal(s) for s in HANDLED}
        for s in HANDLED:
            signal.signal(s, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is None:
            self.signal = signum
            log.warning(
                "%s received: stopping after this step, once %s is saved (Ctrl-C again to "
                "stop at once, without saving).",
                name,
                self.path,
            )
            return
        if signum == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt
        if self._trainer is not None:  # a second SIGTERM: stop at the next boundary, unsaved
            self._hand_to_lightning()

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._previous.items():
                signal.signal(s, handler)
        self._previous = {}

    def _hand_to_lightning(self) -> None:
        lightning_handler = self._previous.get(signal.SIGTERM)
        self._restore()
        if callable(lightning_handler):
            # It sets trainer.received_sigterm; its "Received SIGTERM" line would only
            # repeat (or, for Ctrl-C, contradict) what we logged.
            quiet = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")
            level = quiet.level
            quiet.setLevel(logging.WARNING)
            try:
                lightning_handler(signal.SIGTERM, None)
            finally:
                quiet.setLevel(level)
        else:  # no Lightning handler (e.g. not the main thread): stop here ourselves
            raise SIGTERMException()

    # --- the clean points ---------------------------------------------------------------------

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if self.signal is not None and self.saved_path is None:
            self._save_and_stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signal is not None and self.saved_path is None and not trainer.sanity_checking:
            self._save_and_stop(trainer)

    def _save_and_stop(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # a full, resumable state
        self.saved_path, self.saved_step = self.path, trainer.global_step
        log.warning("Saved %s (step %d).", self.path, trainer.global_step)
        self._hand_to_lightning()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: Any
    ) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()
