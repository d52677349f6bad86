"""``python -m cifar_lightning.show_aug aug=NAME``: see what an augmentation pipeline does.

Writes a PNG grid: one training image per class in rows, the stored image first, then ``draws``
independent draws through ``aug.pipeline`` (uint8, before normalization). Overrides work as for
training: ``experiment=seed003``, ``data=imagefolder data.root=PATH``; ``data=fake`` needs no data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.config import compose_for_tool


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cifar_lightning.show_aug`` / ``cifar-show-aug``: the config is composed
    before torch is imported, so ``--help`` and a typo answer at once."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(argv):
        print(
            __doc__.strip(), "Arguments: aug=NAME, data=…, images=N, draws=N, out=PATH.", sep="\n\n"
        )
        return
    with exit_on_user_error():
        cfg, choices = compose_for_tool(argv, "show_aug")
        from cifar_lightning.tools.show_aug import show_aug

        path = show_aug(cfg, choices.get("aug", "aug"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
