"""``python -m cifar_lightning.reproduce``: the results table from one command on one GPU.

GPU time comes in short slots, so the campaign runs in priority order until
``reproduce.budget_s`` is spent: the self-check, the benchmark (resnet9 and depthwise), seed 004
in full, the speedrun n times (and airbench94 beside it when given), seeds 003, 000, 001 and 002
(each timed for a few steps first: a recipe that would not fit runs as many whole epochs as
fit, marked partial), and the speedrun again in fp16 if time is left. Each step stands alone: a
failure is recorded and the campaign goes on. Every run is one in this process (compiled
graphs and decoded data are reused), in its own directory under ``reproduce.runs_dir``.

It writes ``<out>/<gpu>/<date>-<time>.json`` (every figure, versions, commit, GPU, data) and
the Markdown table to ``<out>/results.md`` and ``reproduce.table`` (docs/results.md; a dry run
or a self-check writes neither that nor a JSON without ``-dry-run``/``-check`` in its name).
``dry_run=true data=fake`` runs every step for 2-3 steps on any machine (make test does);
``check=true`` runs only the self-check.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from cifar_lightning.errors import ConfigError, exit_on_user_error
from cifar_lightning.run.config import compose_for_tool

USAGE = "Arguments: check=true, dry_run=true, data=…, reproduce.KEY=VALUE (conf/reproduce.yaml)."


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cifar_lightning.reproduce [check=true] [dry_run=true] [data=…] [reproduce.*]``;
    the config is checked before torch is imported, so ``--help`` and a typo answer at once."""
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(__doc__.strip(), USAGE, sep="\n\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with exit_on_user_error():
        cfg, _ = compose_for_tool(args, "reproduce")
        if float(cfg.reproduce.budget_s) <= 0:
            raise ConfigError(
                f"reproduce.budget_s={cfg.reproduce.budget_s} leaves no time.",
                fix="e.g. reproduce.budget_s=480",
            )
        data = [a for a in args if a.lstrip("+~").split("=")[0].split(".")[0] == "data"]
        from cifar_lightning.tools.reproduce import campaign

        campaign(cfg, data)


if __name__ == "__main__":
    main()
