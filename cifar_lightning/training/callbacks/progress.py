"""Lightning's Rich progress bar, with log records printed above it instead of onto it.

While a Rich live display runs in a terminal, Rich swaps ``sys.stdout``/``sys.stderr`` for
proxies that print above the display. Logging handlers do not see the swap: each holds the
stream it was made with (Hydra's console handler, Lightning's own), so their lines were written
at the cursor, at the end of the bar, and the display then redrew over them, leaving a
half-erased copy of the bar behind (the doubled last epoch and Testing bars). For as long as
the bar is live, :class:`ProgressBar` points every handler that writes to the terminal at
Rich's proxy (``StreamHandler.setStream``), and back when it stops. Without a terminal Rich
swaps nothing, and nothing changes.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import (
    ProcessingSpeedColumn,
    RichProgressBarTheme,
)
from rich.file_proxy import FileProxy
from rich.progress import BarColumn

# Metrics wherever the terminal shows them (bar, test table, results line): 4 significant digits.
METRIC_FORMAT = ".4g"
NARROW = 100  # terminals narrower than this get a bar without its it/s column
# What the columns beside the bar take, with the spaces between them: "Epoch 10/19", "390/390",
# "0:01:02 • 0:00:31", "val/acc_best: 0.1094" and one column spare; "12.34it/s".
OTHER_COLUMNS, SPEED_COLUMN = 64, 10


def terminal_handlers_to_rich() -> list[tuple[logging.StreamHandler, IO[str]]]:
    """Point every logging handler that writes to the stream a Rich proxy now stands for at
    that proxy; returns ``(handler, its stream)`` pairs to put back."""
    streams = (sys.stdout, sys.stderr)
    proxies = {id(p.rich_proxied_file): p for p in streams if isinstance(p, FileProxy)}
    moved = []
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and id(stream) in proxies:
                handler.setStream(proxies[id(stream)])
                moved.append((handler, stream))
    return moved


def restore_handlers(moved: list[tuple[logging.StreamHandler, IO[str]]]) -> None:
    for handler, stream in reversed(moved):
        handler.setStream(stream)


class ProgressBar(RichProgressBar):
    """``RichProgressBar`` whose live display keeps log lines (and the Ctrl-C warning) above
    it, with metrics one a line to 4 significant digits; arguments as Lightning's."""

    def __init__(
        self,
        refresh_rate: int = 100,
        leave: bool = False,
        theme: RichProgressBarTheme | None = None,
        console_kwargs: dict[str, Any] | None = None,
    ) -> None:
        # One metric a line: side by side, Rich wrapped them mid-metric at 80 and 120 columns.
        theme = theme or RichProgressBarTheme(
            metrics_format=METRIC_FORMAT, metrics_text_delimiter="\n"
        )
        super().__init__(refresh_rate, leave, theme, console_kwargs)
        self._moved: list[tuple[logging.StreamHandler, IO[str]]] = []

    def _init_progress(self, trainer: L.Trainer) -> None:
        live = None if self._progress_stopped else self.progress
        super()._init_progress(trainer)  # a display only if none is live
        if self.progress is not None and self.progress is not live:
            restore_handlers(self._moved)
            self._moved = terminal_handlers_to_rich()  # a new display brings new proxies

    def configure_columns(self, trainer: L.Trainer) -> list:
        """Lightning's columns, the bar (40 wide) shortened to leave the rest their width, and
        under 100 columns without the it/s one. A bar squeezed to the terminal's width wrapped
        ``val/acc_best: 0.1094`` in two, and its last line then ended in the last column, where
        the terminal's own ``^C`` echo wrapped onto a new line and Rich's redraw, one line
        short, left a stale copy of the bar's first line."""
        columns = super().configure_columns(trainer)
        if self._console is None:
            return columns
        width = self._console.width
        if width < NARROW:
            columns = [c for c in columns if not isinstance(c, ProcessingSpeedColumn)]
        others = OTHER_COLUMNS + (SPEED_COLUMN if width >= NARROW else 0)
        for column in columns:
            if isinstance(column, BarColumn):
                column.bar_width = max(10, min(column.bar_width or 40, width - others))
        return columns

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Lightning's metrics without ``v_num``: it shows the last 4 characters of a string
        version, and our TensorBoard versions are names (``depthwise`` showed as ``wise``)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _stop_progress(self) -> None:
        super()._stop_progress()
        restore_handlers(self._moved)
        self._moved = []

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_moved": []}  # handlers hold locks
