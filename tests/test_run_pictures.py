"""What a finished training run leaves for the eye: PNGs in its dir, images and hparams in TB."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cifar_lightning.run.loggers import events_dir
from cifar_lightning.training import figures
from cifar_lightning.training.callbacks.run_pictures import TrainingCurves
from conftest import CLASSES, assert_png

RUN_PICTURES = ("curves", "confusion_matrix", "predictions", "misclassified")


@pytest.fixture(scope="module")
def events(trained_run):
    out, _ = trained_run
    return EventAccumulator(str(events_dir(out)), size_guidance={"images": 0}).Reload()


def test_run_dir_holds_the_pictures(trained_run):
    out, _ = trained_run
    for name in RUN_PICTURES:
        assert_png(out / f"{name}.png")


def test_tensorboard_holds_cards_of_the_pictures(trained_run, events):
    """TensorBoard fits each image into a card 350 px wide: it gets the pictures drawn for
    that width (text it can show at 1:1), the run dir keeps them full size."""
    out, results = trained_run
    images = set(events.Tags()["images"])
    assert {"curves", "test/confusion_matrix", "test/predictions", "test/misclassified"} <= images
    # The validation confusion matrix once per epoch, to watch the classes separate.
    assert len(events.Images("val/confusion_matrix")) == results["epochs"] == 2
    for tag in sorted(images):
        for image in events.Images(tag):
            with Image.open(io.BytesIO(image.encoded_image_string)) as img:
                assert img.format == "PNG" and img.size == (image.width, image.height)
            assert image.width == figures.CARD_PX, tag
        if (on_disk := out / f"{tag.split('/')[-1]}.png").exists():
            with Image.open(on_disk) as full:
                assert full.width >= 600, (tag, full.size)


def test_tensorboard_holds_per_class_accuracy(trained_run, events):
    _, results = trained_run
    scalars = set(events.Tags()["scalars"])
    per_class = [events.Scalars(f"test/acc_class/{c}")[-1].value for c in CLASSES]
    assert all(0.0 <= a <= 1.0 for a in per_class)
    # 64 test images, ~6 per class: the per-class accuracies average back to the total.
    assert "test/acc" in scalars and "hp_metric" not in scalars
    assert min(per_class) <= results["metrics"]["test/acc"] <= max(per_class)


def test_hparams_tab_has_the_config_and_final_metrics(trained_run, events):
    _, results = trained_run
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    metric_names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"test/acc", "test/acc_top5", "val/acc_best"} <= metric_names
    assert "hp_metric" not in metric_names  # no placeholder metric
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    # Each name carries its column rank ("05 lr"), shown as its display name (run/loggers.py).
    hparams = {k.split(" ", 1)[1]: v for k, v in start.session_start_info.hparams.items()}
    assert hparams["lr"].number_value == pytest.approx(0.05)
    assert hparams["optimizer"].string_value == "SGD"
    assert hparams["params"].number_value == results["params"]
    assert hparams["seed"].number_value == results["seed"]
    assert not any("/" in name for name in hparams)  # readable names, not flattened config keys
    shown = [h.display_name for h in experiment.experiment.hparam_infos][:5]
    assert shown == ["model", "experiment", "params", "optimizer", "lr"]  # the five shown first
    assert "config" in events.Tags()["tensors"]  # the full config, in TEXT


def test_curves_follow_the_logged_metrics(trained_run, events):
    out, _ = trained_run
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (saved,) = [v for k, v in state.items() if k.startswith("TrainingCurves")]
    curves = TrainingCurves(out)
    curves.load_state_dict(saved)
    val = curves.history["val/acc"]
    assert [epoch for epoch, _ in val] == [1, 2]
    assert [v for _, v in val] == pytest.approx([e.value for e in events.Scalars("val/acc")])
    for name in ("train/acc", "train/loss_epoch"):  # each epoch's own value, not the one before
        train = curves.history[name]
        assert [epoch for epoch, _ in train] == [1, 2]
        assert [v for _, v in train] == pytest.approx([e.value for e in events.Scalars(name)])
