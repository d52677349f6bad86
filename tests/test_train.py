"""train(cfg) end to end on fake data, and the command line as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lightning.run.loggers import events_dir
from cifar_lightning.run.train import train
from cifar_lightning.training.architectures import DepthwiseClassifier
from conftest import run_cli, run_cli_in_process

FAST_CLI = [
    "debug=fast",
    "data.fake_train_size=256",
]


def test_fast_dev_run(make_cfg):
    results = train(make_cfg("trainer.fast_dev_run=true"))
    assert results["status"] == "completed"
    assert results["params"] == 82_474
    assert "test/acc" in results["metrics"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """Two epochs of 8 steps on fake data; several tests read what it leaves behind."""
    from cifar_lightning.run.config import compose_config
    from conftest import FAST

    out = tmp_path_factory.mktemp("short_run")
    cfg = compose_config(
        [
            *FAST,
            f"paths.output_dir={out}",
            f"paths.data_dir={out / 'data'}",
            "trainer.max_epochs=2",
            "seed=0",
        ]
    )
    return out, train(cfg)


def test_run_dir_holds_metrics_checkpoints_and_tensorboard(short_run):
    out, results = short_run
    written = json.loads((out / "metrics.json").read_text())
    assert written == json.loads(json.dumps(results))
    for key in (
        "test/acc",
        "test/acc_top5",
        "test/loss",
        "val/acc",
        "val/acc_best",
        "val/loss",
        "train/loss",
        "train/acc",
    ):
        assert key in written["metrics"], key
    assert written["params"] == 82_474 and written["epochs"] == 2
    assert written["device"].startswith("cpu") and written["seed"] == 0
    assert written["wall_time_s"] > 0 and written["status"] == "completed"
    best = Path(written["best_checkpoint"])
    assert best.parent == out / "checkpoints" and best.exists()
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_tensorboard_has_the_scalars(short_run):
    out, results = short_run
    events = EventAccumulator(str(events_dir(out))).Reload()
    tags = set(events.Tags()["scalars"])
    for tag in (
        "train/loss",
        "train/loss_epoch",
        "train/acc",
        "train/lr",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/acc",
        "test/acc_top5",
    ):
        assert tag in tags, tag
    assert len(events.Scalars("val/acc")) == 2  # one per epoch
    assert events.Scalars("test/acc")[-1].value == pytest.approx(results["metrics"]["test/acc"])


def test_onecycle_ran_for_exactly_the_trainers_steps(short_run):
    out, results = short_run
    assert results["global_step"] == 2 * (256 // 32)
    lrs = [e.value for e in EventAccumulator(str(events_dir(out))).Reload().Scalars("train/lr")]
    # One cycle: warm up to the peak, then anneal to max_lr / (div * final_div).
    peak = max(lrs)
    assert peak == pytest.approx(0.05, rel=0.05)
    assert lrs[0] < peak and lrs[-1] < lrs[0]


def test_best_checkpoint_loads_weights_only(short_run):
    _, results = short_run
    model = DepthwiseClassifier.load_from_checkpoint(results["best_checkpoint"], weights_only=True)
    assert model.hparams.optimizer["lr"] == 0.05
    assert model.hparams.class_names[0] == "airplane"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_test_metrics_come_from_the_best_checkpoint(short_run):
    _, results = short_run
    assert results["metrics"]["val/acc_best"] >= results["metrics"]["val/acc"]


def test_same_seed_same_numbers(make_cfg, tmp_path):
    a = train(make_cfg("seed=0", f"paths.output_dir={tmp_path / 'a'}"))
    b = train(make_cfg("seed=0", f"paths.output_dir={tmp_path / 'b'}"))
    assert a["metrics"] == b["metrics"]


def test_label_smoothing_and_other_optimizers_train(make_cfg):
    results = train(
        make_cfg(
            "optim=adamw",
            "sched=cosine",
            "loss.label_smoothing=0.1",
            "trainer.limit_train_batches=2",
        )
    )
    assert results["status"] == "completed"


# --- command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_multirun_puts_each_job_in_its_own_dir(tmp_path):
    proc = run_cli(
        "cifar_lightning.train",
        "-m",
        "optim.lr=0.01,0.05",
        *FAST_CLI,
        "trainer.max_epochs=1",
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(tmp_path.glob("multirun/*/*/*/metrics.json"))
    assert len(runs) == 2
    lrs = sorted(json.loads(p.read_text())["overrides"][0] for p in runs)
    assert lrs == ["optim.lr=0.01", "optim.lr=0.05"]
    assert runs[0].parent != runs[1].parent


@pytest.mark.slow
def test_cli_single_run_lands_in_a_dated_dir(tmp_path):
    proc = run_cli(
        "cifar_lightning.train",
        *FAST_CLI,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = tmp_path.glob("*/*/metrics.json")
    assert metrics.parent.parent.name.count("-") == 2  # outputs/<YYYY-MM-DD>/<HH-MM-SS>
    assert (metrics.parent / ".hydra" / "config.yaml").exists()
    assert list(events_dir(metrics.parent).glob("events.out.tfevents.*"))


BAD_VALUES = [
    ("optim.lr=-0.1", "optim.lr=-0.1 must be positive"),
    ("optim.lr=0", "optim.lr=0 must be positive"),
    ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
    ("data.val_size=100000", "data.val_size=100000 leaves no training images"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 trains nothing"),
    ("loss.label_smoothing=1.5", "loss.label_smoothing=1.5 must be in [0, 1)"),
    (
        "data.source=mnist",
        "data.source='mnist' must be one of cifar10, cifar100, imagefolder, fake",
    ),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_cli_bad_config_values_give_one_clear_error(tmp_path, override, message):
    # In-process through the real entry point; test_bad_inputs runs a few in real processes.
    proc = run_cli_in_process(*FAST_CLI, override, f"paths.output_root={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == [], "a rejected run must leave no run dir behind"
