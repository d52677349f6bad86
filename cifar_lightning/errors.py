"""User-facing failures: one clear message, a fix, a non-zero exit code — never a traceback wall.

Code that detects a problem the user can fix raises :class:`UserError` (or a subclass) with
the message and the fix. The command-line entry points catch it in :func:`exit_on_user_error`
and print it; everything else (real bugs) still raises with a full traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text


class UserError(Exception):
    """A problem the user can fix. ``exit_code`` is what the command exits with."""

    exit_code = 1

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class ConfigError(UserError):
    """A bad configuration value: caught before any work starts (exit code 2, like argparse)."""

    exit_code = 2


class DataError(UserError):
    """Missing, corrupt or unreachable data."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt, or not one of ours."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: training stopped, the last good checkpoint is kept."""


class RunInterrupted(UserError):
    """SIGTERM or Ctrl-C stopped training; exits 128 + the signal number, as a shell would."""

    def __init__(self, problem: str, fix: str | None = None, signum: int = 15) -> None:
        super().__init__(problem, fix)
        self.exit_code = 128 + signum


class JobFailed(Exception):
    """A sweep job's UserError, already reported: the sweep ends with exit code 1."""


def report(error: UserError) -> None:
    # Text.assemble, not markup: messages quote overrides such as ``data.classes=[a,b]``.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(Text.assemble(("error: ", "bold red"), error.problem))
    if error.fix:
        console.print(Text.assemble(("  fix: ", "bold"), error.fix))


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a :class:`UserError` into a printed message and ``sys.exit(error.exit_code)``."""
    try:
        yield
    except UserError as error:
        report(error)
        sys.exit(error.exit_code)
