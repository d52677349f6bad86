"""``evaluate``: a checkpoint alone gives the test numbers, eval.json, pictures and TB images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lightning.errors import CheckpointError, ConfigError
from cifar_lightning.run.config import compose_config
from cifar_lightning.run.evaluate import evaluate
from cifar_lightning.run.loggers import events_dir
from conftest import CLASSES, assert_png, run_cli, run_cli_in_process

PICTURES = ("confusion_matrix", "class_accuracy", "predictions", "misclassified", "calibration")


def eval_cfg(out: Path, *overrides: str):
    return compose_config(
        [
            f"paths.output_dir={out}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "data.num_workers=0",
            *overrides,
        ],
        config_name="evaluate",
    )


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    _, results = trained_run
    out = tmp_path_factory.mktemp("evaluate")
    summary = evaluate(eval_cfg(out, f"ckpt_path={results['best_checkpoint']}"))
    return out, summary, results


def test_numbers_match_the_runs_own_test(evaluated):
    _, summary, results = evaluated
    # Training tested the best checkpoint on the same data: evaluate must agree exactly.
    assert summary["metrics"]["acc"] == pytest.approx(results["metrics"]["test/acc"])
    assert summary["metrics"]["acc_top5"] == pytest.approx(results["metrics"]["test/acc_top5"])
    assert summary["num_images"] == 64 and summary["split"] == "test"
    assert summary["data"].startswith("synthetic data")
    assert summary["model"] == "DepthwiseClassifier" and summary["params"] == 82_474


def test_eval_json_and_pictures(evaluated):
    out, summary, _ = evaluated
    written = json.loads((out / "eval.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert [row["class"] for row in written["per_class"]] == CLASSES
    assert sum(row["images"] for row in written["per_class"]) == 64
    matrix = written["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == 64
    correct = sum(matrix[i][i] for i in range(10))
    assert correct / 64 == pytest.approx(written["metrics"]["acc"])
    for row, counts in zip(written["per_class"], matrix, strict=True):
        assert row["correct"] == counts[CLASSES.index(row["class"])]
    assert set(written["files"]) == set(PICTURES)
    for name in PICTURES:
        assert_png(out / f"{name}.png")


def test_tensorboard_has_the_images_and_scalars(evaluated):
    out, summary, _ = evaluated
    events = EventAccumulator(str(events_dir(out)), size_guidance={"images": 0}).Reload()
    assert {f"test/{p}" for p in PICTURES} <= set(events.Tags()["images"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(summary["metrics"]["acc"])
    assert events.Scalars("test/acc_class/cat")[-1].value == pytest.approx(
        summary["per_class"][3]["acc"]
    )


def test_data_options_can_be_overridden(trained_run, tmp_path):
    _, results = trained_run
    summary = evaluate(
        eval_cfg(
            tmp_path,
            f"ckpt_path={results['best_checkpoint']}",
            "data.fake_test_size=40",
            "data.batch_size=16",
            "figures.sample_size=8",
        )
    )
    assert summary["num_images"] == 40
    val = evaluate(
        eval_cfg(tmp_path / "val", f"ckpt_path={results['best_checkpoint']}", "split=val")
    )
    assert val["split"] == "val" and val["num_images"] == 64  # FAST holds out 64 images


def test_clear_errors(trained_run, tmp_path):
    _, results = trained_run
    with pytest.raises(ConfigError, match="no checkpoint given"):
        evaluate(eval_cfg(tmp_path))
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    with pytest.raises(ConfigError, match="split='train' must be test or val"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={results['best_checkpoint']}", "split=train"))
    with pytest.raises(ConfigError, match=r"the data has 3 classes .*, the model 10"):
        evaluate(
            eval_cfg(tmp_path, f"ckpt_path={results['best_checkpoint']}", "data.classes=[a,b,c]")
        )
    other = "data.classes=[a,b,c,d,e,f,g,h,i,j]"
    with pytest.raises(ConfigError, match="are not the model's"):
        evaluate(eval_cfg(tmp_path, f"ckpt_path={results['best_checkpoint']}", other))


@pytest.mark.slow
def test_cli(trained_run, tmp_path):
    _, results = trained_run
    common = [f"paths.output_root={tmp_path}", "data.num_workers=0", "trainer.accelerator=cpu"]
    proc = run_cli(
        "cifar_lightning.evaluate", f"ckpt_path={results['best_checkpoint']}", *common, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (eval_json,) = tmp_path.glob("evaluate/*/*/eval.json")
    assert json.loads(eval_json.read_text())["metrics"]["acc"] == pytest.approx(
        results["metrics"]["test/acc"]
    )
    assert "Per-class accuracy" in proc.stdout and "top-1" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluate"], "no stray run dirs"

    bad = run_cli("cifar_lightning.evaluate", "ckpt_path=missing.ckpt", *common, cwd=tmp_path)
    assert bad.returncode == 1
    assert "error: checkpoint" in bad.stderr and "does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
    assert len(list(tmp_path.glob("evaluate/*/*"))) == 1, "a failed evaluate leaves no run dir"


def test_cli_takes_data_options_as_train_does(trained_run, tmp_path, image_folder):
    """`data=fake`, `data=imagefolder data.root=…`: the spelling train taught the user."""
    _, results = trained_run
    common = [f"ckpt_path={results['best_checkpoint']}", f"paths.output_root={tmp_path}"]
    common += [
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "figures.sample_size=4",
    ]
    fake = run_cli_in_process(
        *common, "data=fake", "data.num_workers=0", cwd=tmp_path, command="evaluate"
    )
    assert fake.returncode == 0, fake.stderr[-3000:]
    folder = run_cli_in_process(
        *common, "data=imagefolder", f"data.root={image_folder}", cwd=tmp_path, command="evaluate"
    )
    assert folder.returncode == 0, folder.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("evaluate/*/*/eval.json"))]
    assert [s["data"].split(",")[0] for s in summaries] == [
        "synthetic data",
        f"image folder {image_folder}",
    ]
    assert summaries[1]["num_images"] == 30  # 3 test images per class
    typo = run_cli_in_process(*common, "data=imagefoldr", cwd=tmp_path, command="evaluate")
    assert typo.returncode == 2
    assert "error: data=imagefoldr is not an option of the data group" in typo.stderr
    assert "data=imagefolder" in typo.stderr and "Traceback" not in typo.stderr
    assert len(summaries) == len(list(tmp_path.glob("evaluate/*/*"))), "no stray run dirs"


def test_data_config_from_the_record_and_overrides():
    from omegaconf import OmegaConf

    from cifar_lightning.run.evaluate import data_config

    record = {"config": {"data": {"_target_": "x.DM", "source": "fake", "batch_size": 128}}}
    overrides = OmegaConf.create({"source": None, "batch_size": 16, "root": None})
    assert data_config(record, overrides) == {
        "_target_": "x.DM",
        "source": "fake",
        "batch_size": 16,
    }
    # A checkpoint that does not say which data it saw needs to be told.
    with pytest.raises(ConfigError, match="does not record which data"):
        data_config({"config": None}, overrides)
    told = data_config({"config": None}, OmegaConf.create({"source": "fake"}))
    assert told == {"source": "fake", "_target_": "cifar_lightning.data.CIFAR10DataModule"}


def test_test_time_augmentation_is_an_evaluation_option(trained_run, tmp_path):
    _, results = trained_run
    ckpt = f"ckpt_path={results['best_checkpoint']}"
    plain = evaluate(eval_cfg(tmp_path / "a", ckpt, "figures.sample_size=4"))
    flipped = evaluate(eval_cfg(tmp_path / "b", ckpt, "test.tta=flip", "figures.sample_size=4"))
    assert plain["tta"] == "none" and flipped["tta"] == "flip"
    # A different prediction function over the same images: the loss must move.
    assert flipped["metrics"]["loss"] != plain["metrics"]["loss"]
    with pytest.raises(ConfigError, match=r"test\.tta='sideways' must be one of none, flip"):
        evaluate(eval_cfg(tmp_path / "c", ckpt, "test.tta=sideways"))


def test_the_device_loader_is_made_for_the_trainers_device(trained_run, tmp_path, monkeypatch):
    """Made before a Trainer was attached, it stayed on the CPU and copied every batch."""
    from cifar_lightning.data.datamodule import CIFAR10DataModule

    devices, original = [], CIFAR10DataModule._device_loader

    def spy(self, dataset, train):
        devices.append(self.trainer and self.trainer.strategy.root_device)
        return original(self, dataset, train)

    monkeypatch.setattr(CIFAR10DataModule, "_device_loader", spy)
    ckpt = trained_run[1]["best_checkpoint"]
    evaluate(eval_cfg(tmp_path, f"ckpt_path={ckpt}", "data.loader=device", "figures.sample_size=4"))
    assert [str(d) for d in devices] == ["cpu"]  # None: made without the Trainer's device


def test_a_run_directory_means_the_checkpoint_its_test_used(trained_run, tmp_path):
    _, results = trained_run
    summary = evaluate(eval_cfg(tmp_path / "a", f"ckpt_path={results['run_dir']}"))
    assert results["tested"] == "best"
    assert summary["checkpoint"] == str(Path(results["best_checkpoint"]).resolve())
    assert summary["metrics"]["acc"] == pytest.approx(results["metrics"]["test/acc"])
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"holds no checkpoints/last\.ckpt"):
        evaluate(eval_cfg(tmp_path / "b", f"ckpt_path={empty}"))


def test_calibrate_fits_a_temperature_on_the_validation_split_never_the_test_set(
    trained_run, tmp_path
):
    ckpt = trained_run[1]["best_checkpoint"]
    summary = evaluate(eval_cfg(tmp_path / "a", f"ckpt_path={ckpt}", "calibrate=true"))
    c = summary["calibration"]
    assert c["temperature"] > 0 and c["fitted_on"].startswith("the validation split (64 images)")
    assert c["after"]["nll"] <= c["nll"] + 0.05  # fitted on other images: close, not exact
    assert set(c) >= {"ece", "mce", "nll", "brier", "bins", "after"}
    assert summary["metrics"]["ece"] == pytest.approx(c["ece"], abs=1e-6)
    written = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert written["calibration"]["temperature"] == c["temperature"]
    with pytest.raises(ConfigError, match="reports on the test set"):
        evaluate(eval_cfg(tmp_path / "b", f"ckpt_path={ckpt}", "calibrate=true", "split=val"))
