"""Keep the console for what matters: drop Lightning's advertisements and known noise.

Only exact, known messages are dropped; every other warning and log line stays.
"""

from __future__ import annotations

import logging
import warnings

_NOISE = (
    "Tip: For seamless cloud logging",  # an advertisement for a hosted service
    "Trainer already configured with model summary callbacks",  # we chose RichModelSummary
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in _NOISE)


def install() -> None:
    # Filters act on the logger that emits, not its parents: name the emitters.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    # Optuna's SQLite storage runs alembic, which logs its set-up at INFO on every search.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # conf/hydra/launcher/{joblib,submitit_*}.yaml share the plugins' names on purpose, so
    # Hydra type-checks them against the plugins' schemas; it warns that it does.
    warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")
    # Lightning 2.6 calls a helper torch >= 2.10 deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
