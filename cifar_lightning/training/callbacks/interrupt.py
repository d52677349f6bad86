"""SIGTERM or Ctrl-C: finish the step, save ``last.ckpt``, then stop the way Lightning does.

Lightning 2.6 alone saves nothing: SIGTERM stops at the next training or validation batch,
Ctrl-C anywhere, even halfway through an optimizer step. Here the signal waits until the step
or validation run is over, ``last.ckpt`` is saved there (a state ModelCheckpoint also saves,
which Lightning resumes exactly), and only then goes to Lightning's SIGTERM handler, so the run
stops Lightning's usual way. A second Ctrl-C stops at once, without saving.
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
    """Saves ``dirpath/filename.ckpt``; after the run, ``signal`` is the signal that stopped it
    (or None), ``saved_path``/``saved_step`` what was saved. A plain Callback, not a
    ``Checkpoint``: it must never be taken for ``trainer.checkpoint_callback`` (the best model).
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        super().__init__()
        self.dirpath, self.filename = Path(dirpath), filename
        self.signal: int | None = None
        self.saved_path: Path | None = None
        self.saved_step: int | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / f"{self.filename}{self.FILE_EXTENSION}"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning has registered its SIGTERM handler by now (Trainer._run); we wrap it.
        self.signal, self.saved_path, self.saved_step = None, None, None
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            return  # Python only lets the main thread set signal handlers
        # signal.signal returns the handler it replaces
        self._previous = {s: signal.signal(s, self._on_signal) for s in HANDLED}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            self.signal = signum
            log.warning(
                f"{signal.Signals(signum).name} received: stopping after this step, once "
                f"{self.path} is saved (Ctrl-C again to stop at once, without saving)."
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

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        # Not after an epoch's last batch: Lightning resumes a save made there by skipping
        # that epoch's validation. The save waits for the epoch's end, where Lightning's
        # checkpoints save too (and periodic_checkpoint's last.ckpt then adds the best's record).
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self.signal is not None and self.saved_path is None and not last:
            self._save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signal is not None and self.saved_path is None:
            self._save_and_stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch  # the epoch's end: wait
        pending = self.signal is not None and self.saved_path is None
        if pending and not trainer.sanity_checking and not last:
            self._save_and_stop(trainer)

    def _save_and_stop(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # a full, resumable state
        self.saved_path, self.saved_step = self.path, trainer.global_step
        log.warning("Saved %s (step %d).", self.path, trainer.global_step)
        self._hand_to_lightning()

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self._restore()

    on_exception = teardown = on_train_end
