"""The campaign ``cifar-reproduce`` runs (its command line, and what it does:
cifar_lightning/reproduce.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from cifar_lightning.atomic import atomic_write
from cifar_lightning.run import checks
from cifar_lightning.run.config import build, compose_for_tool, known_choices
from cifar_lightning.run.train import train
from cifar_lightning.tools import airbench_compare, bench

log = logging.getLogger(__name__)

# What each seed project reported (README's recipe table); airbench94's paper for the speedrun.
REPORTED = {
    "seed000": "89.16%",
    "seed001": "82% (notebook 87.3%)",
    "seed002": "~81% (val)",
    "seed003": "86.74%",
    "seed004": "92.72% (best epoch)",
    "speedrun": "94.01% (airbench94)",
}
BENCHES = (("resnet9", 512), ("depthwise", 128))
# A dry run: a few steps of everything, on whatever data was named (data=fake in make test).
DRY = [
    "trainer.max_steps=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
    "data.batch_size=16", "data.num_workers=0", "timing.warmup_steps=1", "tune.lr_find=false",
    # Pictures cost seconds a run on a CPU, and are tested elsewhere.
    "callbacks.aug_preview=null", "callbacks.training_curves=null",
    "callbacks.evaluation_figures=null",
]  # fmt: skip
DRY_FAKE = ["data.fake_train_size=256", "data.fake_test_size=64", "data.val_size=0"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


class Campaign:
    """The budget, where runs go, and the record every step adds to."""

    def __init__(self, cfg: DictConfig, data: list[str]) -> None:
        self.cfg, self.r, self.data = cfg, cfg.reproduce, data
        self.started = time.perf_counter()
        self.stamp = datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        self.runs_dir = Path(str(self.r.runs_dir)) / self.stamp
        self.dry = bool(cfg.dry_run)
        self.steps: dict[str, Any] = {}
        self._runs = 0

    def left(self) -> float:
        return float(self.r.budget_s) - (time.perf_counter() - self.started)

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run one step; its error is recorded, never raised."""
        log.info("reproduce: %s (%.0f s of the budget left)", name, self.left())
        began = time.perf_counter()
        try:
            result = fn()
            self.steps[name] = {"status": "ok", "seconds": _round(time.perf_counter() - began)}
            if result is not None:
                self.steps[name]["result"] = result
            return result
        except Exception as error:
            log.exception("reproduce: step %s failed", name)
            self.steps[name] = {
                "status": "failed",
                "seconds": _round(time.perf_counter() - began),
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(limit=-6),
            }
            return None

    def overrides(self, *extra: str, fake: bool = False) -> list[str]:
        data = ["data=fake"] if fake else self.data
        dry = [*DRY, *(DRY_FAKE if fake or "data=fake" in self.data else [])] if self.dry else []
        return [*data, *QUIET, *self.r.extra, *dry, *extra]

    def train(self, name: str, overrides: Sequence[str], fake: bool = False) -> dict[str, Any]:
        """One training run, checked as the command line checks it; its metrics.json record."""
        self._runs += 1
        out = self.runs_dir / f"{self._runs:02d}-{name}"
        argv = [*self.overrides(*overrides, fake=fake), f"paths.output_dir={out}"]
        cfg, choices = compose_for_tool(argv, "train")
        with known_choices(choices):
            checks.check(cfg)
            results = train(cfg)
        results["command"] = " ".join(["python -m cifar_lightning.train", *argv])
        results["batch_size"] = int(cfg.data.batch_size)
        results["max_epochs"] = int(cfg.trainer.max_epochs)
        results["model_config"] = OmegaConf.to_container(cfg.model, resolve=True)
        return results


def self_check(c: Campaign) -> dict[str, Any]:
    """What must hold before GPU time is spent on recipes: no host syncs in a training step on
    the device loader, and the speedrun compiled with CUDA graphs plus TTA runs and recompiles
    nothing inside its timed segments. On a CPU the CUDA parts are skipped, and it says so."""
    cuda = torch.cuda.is_available()
    counter = "+callbacks.host_syncs._target_=cifar_lightning.training.callbacks.campaign."
    steps = [f"trainer.max_steps={12 if cuda else 4}", "trainer.log_every_n_steps=50"]
    # Full speedrun batches on a GPU (4 steps an epoch, one test batch); a CPU does small ones.
    small = ["data.fake_train_size=4096", "data.fake_test_size=1024", "data.val_size=0"]
    if not cuda:
        small = ["data.fake_train_size=512", "data.fake_test_size=128", "data.val_size=0",
                 "data.batch_size=64"]  # fmt: skip
    syncs = c.train(
        "check-host-syncs",
        ["experiment=speedrun", f"{counter}HostSyncCounter", "test.enabled=false", *steps, *small],
        fake=True,
    )
    report: dict[str, Any] = {"cuda": cuda}
    if cuda:
        m = syncs["metrics"]
        report["host_syncs_per_step"] = m.get("check/host_syncs_per_step")
        report["host_syncs_max"] = m.get("check/host_syncs_max")
    else:
        report["host_syncs"] = "skipped: torch.cuda.set_sync_debug_mode needs CUDA"
    mode = str(c.r.check_compile) if cuda else "false"
    compiled = c.train(
        "check-compiled-tta",
        ["experiment=speedrun", f"speed.compile={mode}", *steps, *small],
        fake=True,
    )
    timing = compiled.get("timing") or {}
    report["compiled_tta"] = {
        "compile": mode,
        "test_acc": compiled["metrics"].get("test/acc"),
        "recompiles_in_timed_segments": timing.get("recompiles"),
        "valid_time": timing.get("valid"),
    }
    if not cuda:
        report["compiled_tta"]["note"] = "compile skipped: CUDA graphs need CUDA; TTA ran eager"
    return report


def run_bench(c: Campaign) -> dict[str, Any]:
    results = {}
    for model, batch in BENCHES:
        argv = [*c.overrides(f"model={model}", f"data.batch_size={batch}")]
        if c.dry:
            argv += ["bench.warmup_steps=1", "bench.steps=2", "data.batch_size=16"]
        argv += [f"paths.output_dir={c.runs_dir / f'bench-{model}'}"]
        cfg, choices = compose_for_tool(argv, "bench")
        with known_choices(choices):
            results[model] = bench.bench(cfg)
    return results


def timed_recipe(c: Campaign, experiment: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    return c.train(experiment, [f"experiment={experiment}", "timing.enabled=true", *extra])


def fit_to_budget(c: Campaign, experiment: str) -> dict[str, Any]:
    """Time ``reproduce.probe_steps`` steps, predict the full recipe, run what fits."""
    probe = c.train(
        f"{experiment}-probe",
        [f"experiment={experiment}", "timing.enabled=true", "test.enabled=false",
         f"trainer.max_steps={1 if c.dry else int(c.r.probe_steps)}"],
    )  # fmt: skip
    timing = probe["timing"]
    step_s = timing["train_s"] / max(1, probe["global_step"])
    epochs = probe["max_epochs"]  # the recipe's, untouched by the probe's max_steps
    overhead = max(0.0, probe["wall_time_s"] - timing["train_s"])
    epoch_s = step_s * (probe["steps_per_epoch"] or 1) * 1.1  # + validation and epoch ends
    predicted = overhead + epochs * epoch_s
    plan = {"predicted_s": _round(predicted), "epoch_s": _round(epoch_s), "epochs": epochs}
    fits = int((c.left() - overhead) // epoch_s) if epoch_s > 0 else epochs
    if c.dry or predicted <= c.left():
        return {"plan": plan, "run": timed_recipe(c, experiment), "epochs_run": epochs}
    if fits < 1:
        return {"plan": plan, "run": None, "epochs_run": 0}
    stop = "+callbacks.partial._target_=cifar_lightning.training.callbacks.campaign.StopAfterEpochs"
    run = timed_recipe(c, experiment, [stop, f"+callbacks.partial.epochs={fits}"])
    return {"plan": plan, "run": run, "epochs_run": fits}


def speedrun(c: Campaign, precision: str | None = None) -> dict[str, Any]:
    n = 1 if c.dry else int(c.r.speedrun_runs)
    extra = [f"trainer.precision={precision}"] if precision else []
    runs = [c.train("speedrun", ["experiment=speedrun", f"seed={s}", *extra]) for s in range(n)]
    add_flops(runs[0])
    for run in runs[1:]:
        run["flops_per_image"] = runs[0].get("flops_per_image")
    result = {"runs": runs, "acc": _stats([r["metrics"].get("test/acc") for r in runs])}
    result["time_s"] = _stats([(r.get("timing") or {}).get("total_s") for r in runs])
    if c.r.airbench and not precision:
        result["airbench94"] = run_airbench(c, n)
        result["time_ratio"] = result["time_s"]["mean"] / result["airbench94"]["time_s"]["mean"]
    return result


def run_airbench(c: Campaign, n: int) -> dict[str, Any]:
    """airbench94 on the campaign's decoded images, in its own process; its first ``n`` runs."""
    cfg, _ = compose_for_tool([*c.overrides(), "paths.output_dir=unused"], "train")
    splits = build(cfg.data, "data", aug=None).load()
    work = c.runs_dir / "airbench94"
    airbench_compare.export_for_airbench(splits, work / "data")
    runs = airbench_compare.run_airbench(Path(str(c.r.airbench)), work / "data", work)[:n]
    return {k: airbench_compare.summarize(runs, k) for k in ("acc", "time_s")}


# --- the record -----------------------------------------------------------------------------


def _round(x: float | None, digits: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    v = [x for x in values if x is not None]
    std = statistics.stdev(v) if len(v) > 1 else 0.0
    return {"mean": statistics.mean(v) if v else None, "std": std, "n": len(v)}


def training_figures(run: dict[str, Any], peak: float | None) -> dict[str, Any]:
    """Training seconds, images/s (steps x batch) and MFU of one timed run."""
    train_s = (run.get("timing") or {}).get("train_s")
    images = run["global_step"] * run.get("batch_size", 0)
    rate = images / train_s if train_s and images else None
    flops = run.get("flops_per_image")
    mfu = rate * flops / peak if rate and flops and peak and math.isfinite(peak) else None
    return {"train_s": train_s, "images_per_s": rate, "mfu": mfu}


def add_flops(run: dict[str, Any] | None) -> None:
    """The recipe's training FLOPs per image, from its net (as the benchmark counts them)."""
    if run and run.get("model_config"):
        model = build(OmegaConf.create(run["model_config"]), "model")
        criterion = torch.nn.CrossEntropyLoss()
        run["flops_per_image"] = bench.training_flops_per_image(model.net, criterion)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def bench_rows(benches: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"recipe": f"bench {model} (batch {b['batch_size']})", "reported": "-", "ours": "-",
         "epochs": f"{b['steps']} timed steps",
         "images_per_s": b["loops"].get("lightning", {}).get("images_per_s"),
         "mfu": _round(b["loops"].get("lightning", {}).get("mfu"), 4),
         "x_classic": b["ratios"].get("lightning_vs_classic")}
        for model, b in benches.items()
    ]  # fmt: skip


def recipe_row(
    name: str, step: dict[str, Any], peak: float | None, classic: float | None, dry: bool
) -> dict[str, Any]:
    row = {"recipe": name, "reported": REPORTED.get(name.split("-")[0], "-")}
    if step["status"] != "ok":
        return {**row, "ours": step["status"], "error": step.get("error") or step.get("reason")}
    result = step["result"]
    runs = [r for r in result.get("runs") or [result.get("run")] if r]
    if not runs:
        return {**row, "ours": "not run: not one epoch fits the budget", "epochs": "0"}
    figures = [training_figures(r, peak) for r in runs]
    acc = _stats([r["metrics"].get("test/acc") for r in runs])
    ours = f"{100 * acc['mean']:.2f}%" if acc["mean"] is not None else "-"
    if acc["n"] > 1:
        ours += f" ± {100 * acc['std']:.2f} (n={acc['n']})"
    full = (result.get("plan") or {}).get("epochs") or runs[0]["epochs"]
    done = result.get("epochs_run", full)
    epochs = f"{done}/{full} partial" if done != full else f"{full}"
    if dry:
        epochs = f"{runs[0]['global_step']} steps (dry run)"
    rate = _mean([f["images_per_s"] for f in figures])
    return {
        **row, "ours": ours, "epochs": epochs,
        "train_s": _round(_mean([f["train_s"] for f in figures])), "images_per_s": _round(rate, 1),
        "mfu": _round(_mean([f["mfu"] for f in figures]), 4),
        "x_classic": _round(rate / classic, 2) if rate and classic else None,
    }  # fmt: skip


# Each row's net in the benchmark, for "x classic".
ROWS = {"seed004": "resnet9", "speedrun": None, "speedrun-fp16": None, "seed003": "depthwise",
        "seed000": None, "seed001": None, "seed002": None}  # fmt: skip


def table_rows(c: Campaign) -> list[dict[str, Any]]:
    benches = (c.steps.get("bench") or {}).get("result") or {}
    peak = next((b.get("peak_flops") for b in benches.values()), None)
    classic = {m: b["loops"].get("classic", {}).get("images_per_s") for m, b in benches.items()}
    rows = bench_rows(benches)
    for name, net in ROWS.items():
        if name in c.steps:
            rows.append(recipe_row(name, c.steps[name], peak, classic.get(net), c.dry))
    return rows


def check_markdown(record: dict[str, Any]) -> str:
    check = record["steps"]["self_check"]
    found = check.get("result") or {"error": check.get("error")}
    items = [f"- {k}: {json.dumps(v)}" for k, v in found.items()]
    return "\n".join([
        f"# Self-check on {record['gpu']}", "",
        f"`python -m cifar_lightning.reproduce check=true`, {record['date']}, commit "
        f"{record['commit']}: {check['status']} in {check['seconds']} s. Every figure: "
        f"`{record['json']}`.", "", *items, "",
    ])  # fmt: skip


def markdown(c: Campaign, record: dict[str, Any]) -> str:
    if record["check_only"]:
        return check_markdown(record)
    head = "| recipe | seed's reported | ours | epochs | train s | images/s | MFU | × classic |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        cells = [row.get(k) for k in ("recipe", "reported", "ours", "epochs", "train_s",
                                      "images_per_s", "mfu", "x_classic")]  # fmt: skip
        lines.append("| " + " | ".join("-" if v is None else str(v) for v in cells) + " |")
    kind = "**Dry run** (a few steps each: wiring, not results)" if c.dry else "Measured"
    return "\n".join([
        "# Results", "",
        f"{kind} by `python -m cifar_lightning.reproduce` on {record['gpu']}, "
        f"{record['date']}, commit {record['commit']}, data: {record['data']}; "
        f"{record['budget_s']} s budget, {record['elapsed_s']} s used. Every figure: "
        f"`{record['json']}`.", "", *lines, "",
        "Training seconds: CUDA-event time of the epochs (not validation), after an untimed "
        "warm-up. images/s: steps × batch / training seconds. MFU: against the GPU's dense "
        "16-bit peak (the benchmark names it). × classic: against the seeds' loop for that "
        "net in the benchmark. Partial: the recipe's schedule, stopped after the epochs that "
        "fit the budget.", "",
    ])  # fmt: skip


def versions() -> dict[str, Any]:
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": L.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }  # fmt: skip


def git_commit(given: str | None) -> str:
    if given:
        return str(given)
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        cmd = ["git", "rev-parse", "--short", "HEAD"]
        repo = Path(__file__).resolve().parents[2]  # the checkout this package runs from
        run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=repo)
        return run.stdout.strip()
    return "unknown"


def gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def campaign(cfg: DictConfig, data: list[str]) -> dict[str, Any]:
    c = Campaign(cfg, data)
    c.step("self_check", lambda: self_check(c))
    if not cfg.check:
        c.step("bench", lambda: run_bench(c))
        fast = ["data.loader=device"]  # seed 004's aug has a batched form
        seed004 = c.step("seed004", lambda: {"run": timed_recipe(c, "seed004", fast)})
        add_flops((seed004 or {}).get("run"))
        c.step("speedrun", lambda: speedrun(c))
        for recipe in c.r.recipes:
            if c.left() <= 0 and not c.dry:
                c.steps[recipe] = {"status": "skipped", "reason": "the budget is spent"}
                continue
            result = c.step(recipe, lambda r=recipe: fit_to_budget(c, r))
            add_flops((result or {}).get("run"))
        if c.dry or c.left() > 0:
            c.step("speedrun-fp16", lambda: speedrun(c, "16-mixed"))
    return write(c)


def write(c: Campaign) -> dict[str, Any]:
    gpu = gpu_name()
    out = Path(str(c.r.out))
    kind = "-dry-run" if c.dry else "-check" if c.cfg.check else ""
    path = out / gpu.replace(" ", "-").replace("/", "-") / f"{c.stamp}{kind}.json"
    record = {
        "dry_run": c.dry, "check_only": bool(c.cfg.check), "gpu": gpu, "date": c.stamp,
        "commit": git_commit(c.r.commit), "versions": versions(),
        "data": " ".join(c.data) or "data=cifar10", "budget_s": float(c.r.budget_s),
        "elapsed_s": _round(time.perf_counter() - c.started), "json": str(path),
    }  # fmt: skip
    record["rows"] = [] if c.cfg.check else table_rows(c)
    record["steps"] = c.steps
    atomic_write(path, (json.dumps(record, indent=2, default=str) + "\n").encode())
    text = markdown(c, record)
    # A dry run or a self-check never replaces the measured table.
    docs = [Path(str(c.r.table))] if c.r.table and not kind else []
    for table in {out / "results.md", *docs}:
        atomic_write(table, text.encode())
    if c.r.readme and not kind:
        show_in_readme(Path(str(c.r.readme)), text)
    log.info("reproduce: %s written, table in %s", path, out / "results.md")
    print(text)
    return record


README_MARKS = ("<!-- results:start -->", "<!-- results:end -->")


def show_in_readme(readme: Path, text: str) -> None:
    """The table between the README's results marks (its Results section shows it)."""
    if not readme.is_file():
        return
    content = readme.read_text()
    start, end = (content.find(mark) for mark in README_MARKS)
    if 0 <= start < end:
        table = "\n".join(line for line in text.splitlines() if line.startswith("|"))
        block = f"{README_MARKS[0]}\n{table}\n"
        atomic_write(readme, (content[:start] + block + content[end:]).encode())
