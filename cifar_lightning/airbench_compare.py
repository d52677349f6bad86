"""``python -m cifar_lightning.airbench_compare``: our speedrun against airbench94, one GPU.

    python -m cifar_lightning.airbench_compare --airbench PATH/airbench94.py \\
        --data path/to/cifar10-jpeg.tar.gz --runs 5

Runs, in one session on the same GPU and images, airbench94 (a fetched copy of
github.com/KellerJordan/cifar10-airbench, never part of this repository: its 25 runs) and
``--runs`` jobs of ``experiment=speedrun`` (seeds 0…N-1). airbench gets the decoded ``--data``
as its ``cifar10/{train,test}.pt`` cache. Prints mean ± std test accuracy and training time (CUDA
events, warm-up excluded, as airbench reports it), the time ratio and the GPU; the last line is
one JSON object with every figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cifar_lightning.errors import exit_on_user_error
from cifar_lightning.run.config import ArgumentParser, answer_version, compose_for_tool
from cifar_lightning.tools.airbench_compare import compare, print_report, speedrun_overrides


def main(argv: list[str] | None = None) -> None:
    """``cifar-airbench-compare``: its arguments and the speedrun's overrides are checked before
    torch is imported, and before airbench or any run starts."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airbench", type=Path, required=True, help="airbench94.py")
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 image folder/tarball")
    parser.add_argument("--runs", type=int, default=5, help="speedrun runs (airbench: its 25)")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--version", action="store_true", help="print the versions and exit")
    parser.add_argument("extra", nargs="*", help="more overrides for the speedrun runs")
    answer_version(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error():
        args = parser.parse_args(argv)
        compose_for_tool(speedrun_overrides(args.data, args.extra), "train")
        print_report(compare(args))


if __name__ == "__main__":
    main()
