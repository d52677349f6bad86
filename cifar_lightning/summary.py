"""``python -m cifar_lightning.summary model=NAME``: what a net costs and what it sees.

Prints torchinfo's layer table, the trainable parameters and multiply-adds per 32x32 image (the
figures the seed READMEs quote from torchinfo; training's model summary counts the same way,
training/cost.py) and the receptive field, layer by layer: hooks
record conv and pooling layers in call order; ``rf += (kernel - 1) * dilation * jump`` and
``jump *= stride`` grow it up to the first layer that ends the spatial map (global pooling,
flatten, linear). A residual branch runs after the input it adds to, so the chain follows the
longest path; layers called through ``torch.nn.functional`` are unseen. Nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.config import compose_for_tool


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cifar_lightning.summary`` / ``cifar-summary``: the config is composed before
    torch is imported, so ``--help`` and a typo answer at once."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if {"-h", "--help"} & set(argv):
        print(
            __doc__.strip() + "\n\nArguments: model=NAME (conf/model/), experiment=NAME, depth=N."
        )
        return
    with exit_on_user_error():
        cfg, _ = compose_for_tool(argv, "summary")
        from cifar_lightning.tools.summary import run

        run(cfg)


if __name__ == "__main__":
    main()
