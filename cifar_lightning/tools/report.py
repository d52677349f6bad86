"""``python -m cifar_lightning.report PATH [PATH ...]``: one table for a sweep, and its curves.

PATH is a multirun directory (``outputs/multirun/<date>/<time>``), a run directory or any folder
above runs; every training run below is one row. Reading only what runs leave behind
(``metrics.json``, ``.hydra/overrides.yaml``, TensorBoard events) makes it work on sweeps still
running, crashed half-way or made by hand. Writes ``report.md``, ``report.csv`` and
``val_acc.png`` (the val-accuracy curves of every job).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cifar_lightning.errors import ConfigError, UserError, exit_on_user_error
from cifar_lightning.run.config import ArgumentParser, answer_version, parse_overrides

if TYPE_CHECKING:  # Optuna and matplotlib load when a report is made, not for --help
    from cifar_lightning.run.search.summary import SearchSummary

SKIP_DIRS = {"tensorboard", "checkpoints", ".hydra", "__pycache__"}
MEAN = "mean ± std"
NO_RESULT = "no metrics.json: the job crashed, was killed, or is still running"
NUMERIC = ("params", "epochs", "test acc", "best val acc", "wall time")  # right-aligned
HEADERS = ("job", "overrides", *NUMERIC, "status")
Row = list[str]  # a table row as text, in HEADERS order


@dataclass
class Job:
    """One training run as the report sees it."""

    path: Path
    label: str = ""
    overrides: list[str] = field(default_factory=list)
    status: str = "failed"
    params: int | None = None
    epochs: int | None = None
    test_acc: float | None = None
    test_acc_top5: float | None = None
    best_val_acc: float | None = None
    wall_time_s: float | None = None
    seed: int | None = None
    error: str | None = None
    best_trial: bool = False  # the best trial of the search it was part of
    curve: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class SeedGroup:
    """Jobs whose overrides differ only by ``seed``: their spread is the run-to-run noise."""

    overrides: list[str]
    jobs: list[Job]

    def stat(self, attr: str) -> tuple[float, float | None, int] | None:
        """(mean, sample std or None for one value, n) over completed jobs that have it."""
        values = [getattr(j, attr) for j in self.jobs if j.status == "completed"]
        values = [v for v in values if v is not None]
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return statistics.fmean(values), std, len(values)


def _natural(path: Path) -> list[Any]:
    """``2`` before ``10``: multirun job numbers sort as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_training_run(path: Path) -> bool:
    """A ``train`` job's directory (evaluate's run dirs, which also have ``.hydra``, are not)."""
    if (path / "metrics.json").is_file():
        return True
    config = path / ".hydra" / "config.yaml"
    if not config.is_file():
        return False
    try:
        task = OmegaConf.load(config).get("task_name", "train")
    except Exception:  # an unreadable config still marks a run dir (a broken one)
        return True
    return task == "train"


def find_runs(root: Path) -> list[Path]:
    if is_training_run(root):
        return [root]
    try:
        children = sorted((p for p in root.iterdir() if p.is_dir()), key=_natural)
    except OSError:
        return []
    runs: list[Path] = []
    for child in children:
        if child.name not in SKIP_DIRS and not child.name.startswith("."):
            runs.extend(find_runs(child))
    return runs


def read_curve(run: Path, tag: str = "val/acc") -> list[tuple[float, float]]:
    """(epoch, value) points of ``tag`` from the run's TensorBoard events; [] if none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from cifar_lightning.run.loggers import events_dir

    logdir = events_dir(run) if (run / "tensorboard").is_dir() else run
    if not any(logdir.glob("events.out.tfevents.*")):
        return []
    # Keep every scalar, skip the pictures: a run's images would only cost memory here.
    guidance = {"scalars": 0, "images": 1, "tensors": 1, "histograms": 1}
    events = EventAccumulator(str(logdir), size_guidance=guidance).Reload()
    tags = events.Tags().get("scalars", [])
    if tag not in tags:
        return []
    # Plot against epochs so that runs with different batch sizes (and so different step
    # counts) line up. Older runs logged Lightning's epoch beside every metric; ours do not
    # (run/loggers.py), and an epoch metric is logged once per epoch: the n-th step is epoch n.
    by_step: dict[int, float] = {}
    for e in events.Scalars(tag):
        by_step[e.step] = e.value  # a resumed run may log an epoch twice: keep the last value
    if "epoch" not in tags:
        return [(float(n), by_step[s]) for n, s in enumerate(sorted(by_step), start=1)]
    epoch_at = {e.step: e.value for e in events.Scalars("epoch")}
    points = {epoch_at[s] + 1 if s in epoch_at else float(s): v for s, v in by_step.items()}
    return sorted(points.items())


def _load_overrides(run: Path, metrics: dict[str, Any]) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    if path.is_file():
        with contextlib.suppress(Exception):  # unreadable: fall back to metrics.json's copy
            loaded = OmegaConf.load(path)
            if isinstance(loaded, ListConfig):
                return [str(o) for o in loaded]
    return [str(o) for o in metrics.get("overrides") or []]


def read_job(run: Path) -> Job:
    job = Job(path=run, error=NO_RESULT)
    metrics: dict[str, Any] = {}
    if (run / "metrics.json").is_file():
        try:
            metrics = json.loads((run / "metrics.json").read_text())
            job.status = str(metrics.get("status", "completed"))
            job.error = metrics.get("error") or metrics.get("pruned")  # pruned: by what, when
        except (json.JSONDecodeError, OSError) as e:
            job.error = f"metrics.json is unreadable ({e})"
    values = metrics.get("metrics") or {}
    job.overrides = _load_overrides(run, metrics)
    job.params, job.epochs = metrics.get("params"), metrics.get("epochs")
    job.test_acc, job.test_acc_top5 = values.get("test/acc"), values.get("test/acc_top5")
    job.best_val_acc, job.wall_time_s = values.get("val/acc_best"), metrics.get("wall_time_s")
    job.seed = metrics.get("seed", _seed_from(job.overrides))
    job.curve = read_curve(run)
    if job.best_val_acc is None and job.curve:  # a run that died still has its curve
        job.best_val_acc = max(v for _, v in job.curve)
    return job


def _seed_from(overrides: Sequence[str]) -> int | None:
    seeds = [o.value() for o in parse_overrides(overrides) if o.key_or_group == "seed"]
    return seeds[0] if seeds and isinstance(seeds[0], int) else None


def _is_seed(override: str) -> bool:
    return any(o.key_or_group == "seed" for o in parse_overrides([override]))


def common_overrides(jobs: Sequence[Job]) -> list[str]:
    """Overrides every job shares: said once above the table rather than in every row."""
    if len(jobs) < 2:
        return []
    shared = set(jobs[0].overrides).intersection(*(job.overrides for job in jobs[1:]))
    return [o for o in jobs[0].overrides if o in shared]


def seed_groups(jobs: Sequence[Job]) -> list[SeedGroup]:
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        key = tuple(sorted(o for o in job.overrides if not _is_seed(o)))
        groups.setdefault(key, []).append(job)
    return [
        SeedGroup([o for o in members[0].overrides if not _is_seed(o)], members)
        for members in groups.values()
        if len(members) > 1 and len({j.seed for j in members}) == len(members)
    ]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _mean_std(stat: tuple[float, float | None, int] | None, fmt) -> str:
    if stat is None:
        return ""
    mean, std, _ = stat
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def _status(job: Job) -> str:
    if job.status == "completed" or not job.error:
        return job.status + (", best trial" if job.best_trial else "")
    if job.status == "pruned":  # its message starts "pruned by the … pruner after epoch N"
        return job.error
    return f"{job.status}: {job.error}"


def rows(jobs: Sequence[Job], groups: Sequence[SeedGroup], common: Sequence[str]) -> list[Row]:
    """A row per job, in order, then a mean ± std row per seed group."""
    table = [
        [
            job.label,
            " ".join(o for o in job.overrides if o not in common),
            "" if job.params is None else f"{job.params:,}",
            "" if job.epochs is None else str(job.epochs),
            _pct(job.test_acc),
            _pct(job.best_val_acc),
            _duration(job.wall_time_s),
            _status(job),
        ]
        for job in jobs
    ]
    for group in groups:
        n = sum(j.status == "completed" for j in group.jobs)
        seeds = ", ".join(str(j.seed) for j in group.jobs)
        table.append(
            [
                f"{MEAN} of {', '.join(j.label for j in group.jobs)}",
                " ".join(o for o in group.overrides if o not in common),
                "",
                _mean_std(group.stat("epochs"), lambda v: f"{v:.1f}"),
                _mean_std(group.stat("test_acc"), _pct),
                _mean_std(group.stat("best_val_acc"), _pct),
                _mean_std(group.stat("wall_time_s"), _duration),
                f"{n} of {len(group.jobs)} seeds completed (seeds {seeds})",
            ]
        )
    return table


def markdown(table: Sequence[Row], common: Sequence[str], title: str) -> str:
    lines = [f"# {title}", ""]
    if common:
        lines += ["Common to every job: " + " ".join(f"`{o}`" for o in common), ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("--:" if h in NUMERIC else "---" for h in HEADERS) + "|")
    for row in table:
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in row]
        if row[0].startswith(MEAN):
            cells = [f"**{c}**" if c else c for c in cells]
        elif cells[1]:
            cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "test acc: top-1 on the test set with the best checkpoint (by val acc); ± is the "
        "sample standard deviation over seeds. A failed job's row says why; a pruned one "
        "(stopped by the search for trailing earlier trials) when.",
    ]
    return "\n".join(lines) + "\n"


CSV_FIELDS = (
    "job",
    "kind",
    "status",
    "overrides",
    "seed",
    "params",
    "epochs",
    "test_acc",
    "test_acc_std",
    "test_acc_top5",
    "best_val_acc",
    "best_val_acc_std",
    "wall_time_s",
    "n_seeds",
    "error",
    "path",
)


def csv_text(jobs: Sequence[Job], groups: Sequence[SeedGroup]) -> str:
    """Machine-readable: full overrides, raw numbers, one row per job and per seed group."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        # The Job's own fields as they are: csv writes None as an empty cell, a Path as text.
        row = {f.name: getattr(job, f.name) for f in fields(Job) if f.name in CSV_FIELDS}
        writer.writerow(
            row | {"job": job.label, "kind": "job", "overrides": " ".join(job.overrides)}
        )
    for group in groups:
        test, val, wall = (group.stat(a) for a in ("test_acc", "best_val_acc", "wall_time_s"))
        writer.writerow(
            {
                "job": "+".join(j.label for j in group.jobs),
                "kind": "seed_mean",
                "overrides": " ".join(group.overrides),
                "test_acc": test[0] if test else None,
                "test_acc_std": test[1] if test else None,
                "best_val_acc": val[0] if val else None,
                "best_val_acc_std": val[1] if val else None,
                "wall_time_s": wall[0] if wall else None,
                "n_seeds": test[2] if test else 0,
            }
        )
    return buffer.getvalue()


def curves_png(jobs: Sequence[Job], common: Sequence[str], path: Path) -> Path | None:
    curves = {}
    for job in jobs:
        if job.curve:
            varying = " ".join(o for o in job.overrides if o not in common)
            label = f"{job.label}: {varying}" if varying else job.label
            curves[label if len(label) <= 60 else label[:59] + "…"] = job.curve
    if not curves:
        return None
    from cifar_lightning.training import figures

    fig = figures.compare_curves_figure(
        curves, ylabel="val accuracy", title=f"Validation accuracy per epoch, {len(curves)} jobs"
    )
    return figures.save_png(fig, path)


def build_report(paths: Sequence[Path], out_dir: Path | None = None) -> dict[str, Any]:
    """Find the runs under ``paths``, write the report files; returns what was written."""
    runs: list[Path] = []
    for p in paths:
        if not p.exists() and "=" in p.name:  # e.g. aug=crop_flip: meant for train
            raise ConfigError(
                f"{p}: report takes directories, not overrides.",
                fix="pass a multirun directory (outputs/multirun/<date>/<time>) or run "
                "directories; overrides go to the command that trains (python -m "
                "cifar_lightning.train -m ...)",
            )
        if not p.is_dir():
            raise UserError(
                f"{p} is not a directory.",
                fix="pass a multirun directory (outputs/multirun/<date>/<time>) or run "
                "directories (outputs/<date>/<time>)",
            )
        runs.extend(r for r in find_runs(p) if r not in runs)
    if not runs:
        raise UserError(
            f"no training runs under {', '.join(map(str, paths))} (a run directory has "
            "metrics.json or .hydra/).",
            fix="pass the directory a sweep wrote, e.g. outputs/multirun/<date>/<time>",
        )
    base = Path(os.path.commonpath([p.resolve() for p in paths]))
    out_dir = (out_dir or base).expanduser()

    jobs = [read_job(r) for r in runs]
    for job in jobs:
        rel = os.path.relpath(job.path.resolve(), base)
        job.label = job.path.name if rel == "." else rel
    common, groups = common_overrides(jobs), seed_groups(jobs)
    from cifar_lightning.run.search import summary

    search = summary.find(runs)  # the Optuna study these jobs were trials of, if any
    if search is not None and (best := search.best()) is not None:
        for job in jobs:
            job.best_trial = job.path == search.jobs.get(best.number)
    table = rows(jobs, groups, common)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    text = markdown(table, common, f"Sweep report: {base}")
    if search is not None:
        made = summary.plots(search, out_dir)
        written.update({f"search {k}": v for k, v in made.items() if isinstance(v, Path)})
        text += search_markdown(search, made)
    written["markdown"].write_text(text)
    written["csv"].write_text(csv_text(jobs, groups))
    png = curves_png(jobs, common, out_dir / "val_acc.png")
    if png is not None:
        written["curves"] = png
    return {
        "jobs": jobs,
        "groups": groups,
        "rows": table,
        "common": common,
        "files": written,
        "search": search_lines(search) if search is not None else [],
    }


def search_lines(search: SearchSummary) -> list[str]:
    """The study in a few sentences: where, how its trials ended, which was best."""
    study = search.study
    counts = ", ".join(f"{n} {state}" for state, n in search.counts().items())
    goal = "/".join(d.name.lower() for d in study.directions)
    lines = [f"Study {study.study_name!r} ({goal}) in {search.storage}: {counts}."]
    best = search.best()
    if best is None:
        lines.append("No trial completed: there is no best trial.")
        return lines
    job = search.jobs.get(best.number)
    where = f" (job {job.name})" if job is not None else " (a job of another sweep)"
    params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in best.params.items())  # fmt: skip
    lines.append(f"Best trial: {best.number}{where}, value {best.value:.4g}: {params}")
    return lines


def search_markdown(search: SearchSummary, made: dict[str, Path | str]) -> str:
    lines = ["", "## Search", "", *(f"{line}  " for line in search_lines(search)), ""]
    for name, result in made.items():
        title = {"history": "Optimization history", "importance": "Parameter importances"}[name]
        if isinstance(result, Path):
            lines.append(f"![{title}]({result.name})")
        else:
            lines.append(f"{title}: not drawn ({result}).")
    return "\n".join(lines) + "\n"


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title_justify="left", title="Sweep report")
    for header in HEADERS:
        table.add_column(header, justify="right" if header in NUMERIC else "left", overflow="fold")
    for row in report["rows"]:
        mean, status = row[0].startswith(MEAN), row[-1]
        if not mean and status.startswith("pruned"):
            status = f"[yellow]{status}[/]"
        elif not mean and not status.startswith("completed"):
            status = f"[red]{status}[/]"
        table.add_row(*row[:-1], status, style="bold" if mean else None)
    if report["common"]:
        console.print("Common to every job: " + " ".join(report["common"]), highlight=False)
    console.print(table)
    for line in report["search"]:
        console.print(line, highlight=False)
    statuses = [j.status for j in report["jobs"]]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    said = f"{len(report['jobs'])} jobs: {counts}."
    console.print(said + " Written: " + ", ".join(str(p) for p in report["files"].values()))
    if "curves" not in report["files"]:
        console.print("No val/acc curves found in the runs' TensorBoard events: no PNG.")


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m cifar_lightning.report",
        description="Tabulate a sweep (or several runs): report.md, report.csv, val_acc.png.",
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="multirun dir, run dirs, or above"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write (default: PATH, or the PATHs' common parent)"
    )
    parser.add_argument("--version", action="store_true", help="print the versions and exit")
    answer_version(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error():
        args = parser.parse_args(argv)
        report = build_report(args.paths, args.out)
        # Piped or redirected, Rich would squeeze the table into 80 columns.
        print_report(report, Console(width=None if sys.stdout.isatty() else 160))


if __name__ == "__main__":
    main()
