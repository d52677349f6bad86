"""The comparison ``cifar-airbench-compare`` runs (its command line, and what it does:
cifar_lightning/airbench_compare.py)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifar_lightning.errors import UserError

if TYPE_CHECKING:  # torch and the data load in the functions that use them: the command line
    from cifar_lightning.data.sources import Splits  # checks its overrides before

_ROW = re.compile(r"^\|\s*(\S*)\s*\|\s*eval\s*\|(.*)$")


def export_for_airbench(splits: Splits, directory: Path) -> None:
    """airbench's own cache format, a ``{images, labels, classes}`` file per split; images
    are (N, 32, 32, 3) uint8, as torchvision stores them."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", splits.train), ("test", splits.test)):
        images, labels = torch.from_numpy(split.images), torch.from_numpy(split.labels)
        data = {"images": images, "labels": labels, "classes": list(splits.classes)}
        torch.save(data, directory / f"{name}.pt")


def parse_airbench(output: str) -> list[dict[str, float]]:
    """airbench94's final row per run: ``| run | eval | … | tta_val_acc | total_time_seconds |``."""
    rows = [m.group(2) for line in output.splitlines() if (m := _ROW.match(line.strip()))]
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    return [{"acc": float(c[-2]), "time_s": float(c[-1])} for c in cells]


def summarize(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "n": len(values)}


def _run(cmd: list[str], log: Path, what: str, cwd: Path | None = None) -> str:
    """``cmd``'s stdout; its whole output is kept in ``log``, which a failure points to."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise UserError(
            f"{what} exited with {proc.returncode}; see {log}.",
            fix="its last lines say why; rerun it by hand to debug",
        )
    return proc.stdout


def run_airbench(script: Path, data_dir: Path, work: Path) -> list[dict[str, float]]:
    work.mkdir(parents=True, exist_ok=True)
    shutil.copytree(data_dir, work / "cifar10", dirs_exist_ok=True)
    cmd = [sys.executable, str(script)]
    return parse_airbench(_run(cmd, work / "airbench.log", "airbench", cwd=work))


def speedrun_overrides(data: Path, extra: Sequence[str]) -> list[str]:
    """The speedrun's command line but the seeds and the output root (checked up front)."""
    return ["experiment=speedrun", "data=imagefolder", f"data.root={data}", *extra]


def run_speedrun(data: Path, runs: int, work: Path, extra: list[str]) -> list[dict[str, float]]:
    seeds = ",".join(str(s) for s in range(runs))
    cmd = [sys.executable, "-m", "cifar_lightning.train", "-m", f"seed={seeds}"]
    cmd += [f"paths.output_root={work}", *speedrun_overrides(data, extra)]
    _run(cmd, work / "speedrun.log", "the speedrun sweep")
    records = [json.loads(p.read_text()) for p in sorted(work.glob("multirun/*/*/*/metrics.json"))]
    return [
        {
            "acc": r["metrics"]["test/acc"],
            "time_s": r["timing"]["total_s"],
            "cold_start_s": r["timing"]["cold_start_s"],
        }
        for r in records
    ]


def compare(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cifar_lightning.data.imagefolder import load_imagefolder
    from cifar_lightning.data.sources import CIFAR10_CLASSES

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
    speedrun = {k: summarize(ours, k) for k in ("acc", "time_s", "cold_start_s")}
    airbench = {k: summarize(theirs, k) for k in ("acc", "time_s")}
    return {
        "gpu": torch.cuda.get_device_name(),
        "data": str(args.data),
        "speedrun": speedrun,
        "airbench94": airbench,
        "workdir": str(work),
        "time_ratio": speedrun["time_s"]["mean"] / airbench["time_s"]["mean"],
        "acc_at_least_airbench": speedrun["acc"]["mean"] >= airbench["acc"]["mean"],
    }


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
