"""``python -m cifar_lightning.airbench_compare``: our speedrun against airbench94, one GPU.

    python -m cifar_lightning.airbench_compare --airbench PATH/airbench94.py \\
        --data ../shared/data/cifar10-jpeg.tar.gz --runs 5

Side by side in one session, on the same GPU and the same images: airbench94 (a fetched copy
of github.com/KellerJordan/cifar10-airbench, never part of this repository; its legacy
``airbench94.py`` runs 25 times and prints a row per run) and ``experiment=speedrun``
(``--runs`` jobs, seeds 0…N-1). airbench loads ``cifar10/train.pt`` and ``test.pt`` from its
working directory when they exist, so both get the decoded arrays of ``--data``. Prints mean ±
std test accuracy and training time (CUDA events, warm-up excluded, as airbench reports it),
the time ratio and the GPU; the last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from cifar_lightning.data.imagefolder import load_imagefolder
from cifar_lightning.data.sources import CIFAR10_CLASSES, Splits
from cifar_lightning.errors import UserError, exit_on_user_error


def export_for_airbench(splits: Splits, directory: Path) -> None:
    """The arrays in airbench's own cache format: ``{images, labels, classes}`` per split."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", splits.train), ("test", splits.test)):
        torch.save(
            {
                "images": torch.from_numpy(split.images),  # (N, 32, 32, 3) uint8, as torchvision
                "labels": torch.from_numpy(split.labels),
                "classes": list(splits.classes),
            },
            directory / f"{name}.pt",
        )


_ROW = re.compile(r"^\|\s*(\S*)\s*\|\s*eval\s*\|(.*)$")


def parse_airbench(output: str) -> list[dict[str, float]]:
    """airbench94's final row per run: ``| run | eval | … | tta_val_acc | total_time_seconds |``."""
    runs = []
    for line in output.splitlines():
        m = _ROW.match(line.strip())
        if m:
            cells = [c.strip() for c in m.group(2).strip().strip("|").split("|")]
            runs.append({"acc": float(cells[-2]), "time_s": float(cells[-1])})
    return runs


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def run_airbench(script: Path, data_dir: Path, work: Path) -> list[dict[str, float]]:
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data_dir, work / "cifar10", dirs_exist_ok=True)
    proc = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True)
    (work / "airbench.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise UserError(
            f"airbench exited with {proc.returncode}; see {work / 'airbench.log'}.",
            fix="run it by hand in that directory to see why",
        )
    return parse_airbench(proc.stdout)


def run_speedrun(data: Path, runs: int, work: Path, extra: list[str]) -> list[dict[str, float]]:
    seeds = ",".join(str(s) for s in range(runs))
    cmd = [
        sys.executable,
        "-m",
        "cifar_lightning.train",
        "-m",
        "experiment=speedrun",
        f"seed={seeds}",
        "data=imagefolder",
        f"data.root={data}",
        f"paths.output_root={work}",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (work / "speedrun.log").parent.mkdir(parents=True, exist_ok=True)
    (work / "speedrun.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise UserError(f"the speedrun sweep failed; see {work / 'speedrun.log'}.")
    results = []
    for path in sorted(work.glob("multirun/*/*/*/metrics.json")):
        record = json.loads(path.read_text())
        results.append(
            {
                "acc": record["metrics"]["test/acc"],
                "time_s": record["timing"]["total_s"],
                "cold_start_s": record["timing"]["cold_start_s"],
            }
        )
    return results


def compare(args: argparse.Namespace) -> dict[str, Any]:
    if not torch.cuda.is_available():
        raise UserError(
            "the comparison needs a CUDA GPU (airbench94 runs only on one).",
            fix="run it on a GPU machine",
        )
    splits = load_imagefolder(args.data, CIFAR10_CLASSES, args.cache_dir)
    work = Path(tempfile.mkdtemp(prefix="airbench-compare-", dir=args.workdir))
    export_for_airbench(splits, work / "data")
    ours = run_speedrun(args.data, args.runs, work / "speedrun", args.extra)
    theirs = run_airbench(args.airbench, work / "data", work / "airbench")
    result = {
        "gpu": torch.cuda.get_device_name(),
        "data": str(args.data),
        "speedrun": {
            "acc": summarize([r["acc"] for r in ours]),
            "time_s": summarize([r["time_s"] for r in ours]),
            "cold_start_s": summarize([r["cold_start_s"] for r in ours]),
        },
        "airbench94": {
            "acc": summarize([r["acc"] for r in theirs]),
            "time_s": summarize([r["time_s"] for r in theirs]),
        },
        "workdir": str(work),
    }
    result["time_ratio"] = (
        result["speedrun"]["time_s"]["mean"] / result["airbench94"]["time_s"]["mean"]
    )
    result["acc_at_least_airbench"] = (
        result["speedrun"]["acc"]["mean"] >= result["airbench94"]["acc"]["mean"]
    )
    return result


def print_report(r: dict[str, Any]) -> None:
    print(f"GPU: {r['gpu']}; data: {r['data']}")
    for name in ("airbench94", "speedrun"):
        a, t = r[name]["acc"], r[name]["time_s"]
        print(
            f"{name:>11}: acc {a['mean']:.4f} ± {a['std']:.4f} (n={a['n']}), "
            f"time {t['mean']:.2f} ± {t['std']:.2f} s"
        )
    print(
        f"time ratio (speedrun / airbench94): {r['time_ratio']:.2f}; "
        f"accuracy at least airbench94's: {r['acc_at_least_airbench']}"
    )
    print(json.dumps(r))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airbench", type=Path, required=True, help="airbench94.py")
    parser.add_argument("--data", type=Path, required=True, help="CIFAR-10 image folder/tarball")
    parser.add_argument("--runs", type=int, default=5, help="speedrun runs (airbench: its 25)")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("extra", nargs="*", help="more overrides for the speedrun runs")
    with exit_on_user_error():
        print_report(compare(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
