"""``report``: one row per job, mean ± std over seeds, failures shown, curves from TensorBoard."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from cifar_lightning.errors import UserError
from cifar_lightning.tools.report import build_report, main, read_curve
from conftest import assert_png, run_cli

FAST_CLI = [
    "debug=fast",
    "data.fake_train_size=256",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "~callbacks.evaluation_figures",
    "~callbacks.training_curves",
]


def fake_job(
    root: Path,
    name: str,
    overrides: list[str],
    metrics: dict | None,
    val_acc: list[float] = (),
) -> Path:
    """A job dir as train leaves it: .hydra/overrides.yaml, metrics.json, TensorBoard events."""
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "config.yaml").write_text("task_name: train\n")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if val_acc:
        writer = SummaryWriter(str(job / "tensorboard"))
        for epoch, acc in enumerate(val_acc):
            step = 10 * (epoch + 1) - 1
            writer.add_scalar("val/acc", acc, step)
            writer.add_scalar("epoch", epoch, step)
        writer.close()
    return job


def completed(test_acc: float, val_best: float, seed: int, wall: float = 60.0) -> dict:
    return {
        "status": "completed",
        "metrics": {"test/acc": test_acc, "test/acc_top5": 0.9, "val/acc_best": val_best},
        "params": 82_474,
        "epochs": 3,
        "wall_time_s": wall,
        "seed": seed,
    }


@pytest.fixture
def sweep(tmp_path) -> Path:
    """lr=0.1 over three seeds, lr=0.2 over two (one of which failed), a crashed job."""
    root = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    common = ["data=fake", "trainer.max_epochs=3"]
    for i, (lr, seed, acc) in enumerate([(0.1, 0, 0.50), (0.1, 1, 0.54), (0.1, 2, 0.58)]):
        fake_job(
            root,
            str(i),
            [f"optim.lr={lr}", f"seed={seed}", *common],
            completed(acc, acc + 0.01, seed),
            val_acc=[0.2, 0.4, acc + 0.01],
        )
    fake_job(root, "3", ["optim.lr=0.2", "seed=0", *common], completed(0.40, 0.41, 0))
    fake_job(
        root,
        "4",
        ["optim.lr=0.2", "seed=1", *common],
        {"status": "failed", "error": "FloatingPointError: loss is nan", "seed": 1},
    )
    fake_job(root, "10", ["optim.lr=0.3", "seed=0", *common], None, val_acc=[0.1, 0.15])
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_one_row_per_job_with_status(sweep):
    report = build_report([sweep])
    jobs = report["jobs"]
    assert [j.label for j in jobs] == ["0", "1", "2", "3", "4", "10"]  # 10 after 4
    assert [j.status for j in jobs] == ["completed"] * 4 + ["failed", "failed"]
    assert jobs[4].error == "FloatingPointError: loss is nan"
    assert "no metrics.json" in jobs[5].error
    assert jobs[5].best_val_acc == pytest.approx(0.15)  # from its curve: it died after epoch 2
    assert report["common"] == ["data=fake", "trainer.max_epochs=3"]


def test_seed_groups_get_mean_and_std(sweep):
    report = build_report([sweep])
    (group_01, group_02) = report["groups"]
    mean, std, n = group_01.stat("test_acc")
    assert (mean, std, n) == (pytest.approx(0.54), pytest.approx(0.04), 3)
    assert group_02.stat("test_acc") == (pytest.approx(0.40), None, 1)  # the failed seed skipped
    md = (sweep / "report.md").read_text()
    assert "54.00% ± 4.00%" in md and "mean ± std of 0, 1, 2" in md
    assert "failed: FloatingPointError: loss is nan" in md
    assert "Common to every job: `data=fake` `trainer.max_epochs=3`" in md
    assert "| 0 | `optim.lr=0.1 seed=0` | 82,474 | 3 | 50.00% | 51.00% | 1m 00s | completed |" in md


def test_csv_is_machine_readable(sweep):
    build_report([sweep])
    rows = list(csv.DictReader(io.StringIO((sweep / "report.csv").read_text())))
    jobs = [r for r in rows if r["kind"] == "job"]
    means = [r for r in rows if r["kind"] == "seed_mean"]
    assert len(jobs) == 6 and len(means) == 2
    assert float(jobs[0]["test_acc"]) == 0.5 and jobs[0]["overrides"].startswith("optim.lr=0.1")
    assert jobs[4]["status"] == "failed" and jobs[4]["test_acc"] == ""
    assert float(means[0]["test_acc"]) == pytest.approx(0.54)
    assert float(means[0]["test_acc_std"]) == pytest.approx(0.04)
    assert means[0]["n_seeds"] == "3"


def test_curves_come_from_tensorboard(sweep):
    assert read_curve(sweep / "0") == [
        (1.0, pytest.approx(0.2)),
        (2.0, pytest.approx(0.4)),
        (3.0, pytest.approx(0.51)),
    ]
    assert read_curve(sweep / "3") == []
    report = build_report([sweep], out_dir=sweep / "out")
    assert_png(report["files"]["curves"])
    assert report["files"]["curves"] == sweep / "out" / "val_acc.png"


def test_several_run_dirs_and_errors(sweep, tmp_path, capsys):
    report = build_report([sweep / "0", sweep / "3"], out_dir=tmp_path / "two")
    assert [j.label for j in report["jobs"]] == ["0", "3"]
    assert report["groups"] == []  # they differ by lr, not only by seed
    with pytest.raises(UserError, match="no training runs"):
        build_report([tmp_path / "two"])
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 1
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_two_seed_multirun(tmp_path):
    proc = run_cli(
        "cifar_lightning.train",
        "-m",
        "seed=0,1",
        *FAST_CLI,
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    proc = run_cli("cifar_lightning.report", str(sweep), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean ± std of 0, 1" in proc.stdout
    md = (sweep / "report.md").read_text()
    assert "mean ± std of 0, 1" in md and " ± " in md.split("mean ± std of 0, 1")[1]
    rows = list(csv.DictReader(io.StringIO((sweep / "report.csv").read_text())))
    assert [r["kind"] for r in rows] == ["job", "job", "seed_mean"]
    assert all(r["status"] == "completed" for r in rows[:2])
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
    assert_png(sweep / "val_acc.png")


def test_curves_without_an_epoch_tag_count_epochs(tmp_path):
    """Runs log no `epoch` scalar any more (run/loggers.py): the n-th value is epoch n."""
    writer = SummaryWriter(str(tmp_path / "run" / "tensorboard" / "depthwise"))
    for step, acc in ((7, 0.3), (15, 0.5), (15, 0.55), (23, 0.6)):  # step 15 logged twice
        writer.add_scalar("val/acc", acc, step)
    writer.close()
    assert read_curve(tmp_path / "run") == [
        (1.0, pytest.approx(0.3)),
        (2.0, pytest.approx(0.55)),
        (3.0, pytest.approx(0.6)),
    ]
