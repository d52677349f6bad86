"""The drawing functions and the prediction collector, without training anything."""

from __future__ import annotations

import functools
import io
import itertools

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lightning.data.corruptions import FAMILIES
from cifar_lightning.data.datamodule import normalize
from cifar_lightning.data.sources import CIFAR100_SUPERCLASSES
from cifar_lightning.training import aug_grid, figures
from cifar_lightning.training.calibration import calibration, reliability_bins, reliability_figure
from cifar_lightning.training.predictions import PredictionCollector, to_uint8_images
from cifar_lightning.training.robustness import corruption_figure
from conftest import CLASSES, assert_png

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def test_every_figure_is_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 32, 32, 3), dtype=np.uint8)
    targets, preds = list(range(10)), [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]
    made = {
        "cm": figures.confusion_matrix_figure(rng.integers(0, 50, (10, 10)), CLASSES, "t"),
        "grid": figures.prediction_grid_figure(images, targets, preds, CLASSES, "t"),
        "wrong": figures.misclassified_figure(images, targets, preds, [0.5] * 10, CLASSES, "t"),
        "curves": figures.curves_figure({"val/acc": [(1, 0.2), (2, 0.4)], "train/acc": []}),
        "compare": figures.compare_curves_figure({"a": [(1, 0.1), (2, 0.3)], "b": [(1, 0.2)]}),
        "predict": figures.predictions_figure(
            images[:4], ["a.png", "b.jpg", "c.png", "d" * 40], [[("cat", 0.7), ("dog", 0.2)]] * 4
        ),
    }
    for name, fig in made.items():
        assert_png(figures.save_png(fig, tmp_path / f"{name}.png"))


def test_grid_frames_are_green_for_right_and_red_for_wrong(tmp_path):
    images = np.full((2, 32, 32, 3), 255, dtype=np.uint8)  # white: only frames are coloured
    fig = figures.prediction_grid_figure(images, [0, 1], [0, 2], CLASSES)
    with Image.open(io.BytesIO(figures.png_bytes(fig))) as img:
        rgb = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)

    def count(hex_color):
        target = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - target).sum(axis=1) < 30).sum())

    assert count(figures.RIGHT) > 100 and count(figures.WRONG) > 100


def card_drawings() -> dict[str, figures.Drawing]:
    """Every picture that goes to TensorBoard, with the longest names and numbers it meets."""
    from lightning.pytorch.tuner.lr_finder import _LRFinder

    from cifar_lightning.run.tune import lr_find_figure

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 32, 32, 3), dtype=np.uint8)
    wrong = [1] * 64  # "automobile", the longest CIFAR-10 name, in every caption
    matrix = rng.integers(0, 60, (10, 10)) + np.diag(rng.integers(300, 1000, 10))
    rows = [dict(r, most_confused_with="automobile") for r in class_rows(rng, CLASSES)]
    supers = list(CIFAR100_SUPERCLASSES)  # up to 30 characters
    many = [f"class_number_{i}" for i in range(100)]
    logits, targets = torch.randn(500, 10) * 3, torch.randint(0, 10, (500,))
    names = [n for members in FAMILIES.values() for n in members]
    corruptions = {
        "acc": {n: list(rng.random(5)) for n in names},
        "severities": [1, 2, 3, 4, 5],
        "clean_acc": 0.9,
        "corruption_acc": {n: 0.5 for n in names},
        "mean_corruption_acc": 0.5,
        "relative_drop": 0.444,
    }
    two = ("fog", "jpeg_compression")
    two_corruptions = corruptions | {
        "acc": {n: corruptions["acc"][n] for n in two},
        "corruption_acc": {n: 0.5 for n in two},
    }
    originals = torch.from_numpy(images[:10]).permute(0, 3, 1, 2)
    augmented = torch.randint(0, 256, (10, 8, 3, 32, 32), dtype=torch.uint8)
    finder = _LRFinder("exponential", 1e-5, 1.0, 60)
    finder.results = {"lr": list(np.geomspace(1e-5, 1, 60)), "loss": list(np.linspace(2.3, 1, 60))}
    title = "ResNet9Classifier on the test set: 45.3% of 10,000 images, as long as they come"
    cm_title = "Confusion matrix, test set: 45.3% of 10,000 images"  # what the run writes
    partial = functools.partial
    return {
        "confusion_matrix": partial(figures.confusion_matrix_figure, matrix, CLASSES, cm_title),
        "confusion_4_digits": partial(
            figures.confusion_matrix_figure, matrix * 10, CLASSES, cm_title
        ),
        "confusion_20": partial(
            figures.confusion_matrix_figure, rng.integers(0, 99, (20, 20)), supers, cm_title
        ),
        "class_accuracy": partial(figures.class_accuracy_figure, rows, 0.5, title),
        "class_accuracy_100": partial(
            figures.class_accuracy_figure, class_rows(rng, many), 0.5, title
        ),
        "predictions": partial(
            figures.prediction_grid_figure, images, [3] * 64, wrong, CLASSES, title
        ),
        "misclassified": partial(
            figures.misclassified_figure,
            images[:32],
            [3] * 32,
            wrong[:32],
            [0.999] * 32,
            CLASSES,
            title,
        ),
        "curves": partial(
            figures.curves_figure,
            {k: [(1, 2.0), (2, 1.5), (3, 1.0)] for k in ("train/loss_epoch", "val/acc")},
            title,
            "train (dominant label of the mixed images)",
        ),
        "curves_one_epoch": partial(figures.curves_figure, {"val/acc": [(1, 0.5)]}, title),
        "calibration": partial(
            reliability_figure,
            reliability_bins(logits, targets),
            calibration(logits, targets),
            title,
        ),
        "corruptions": partial(corruption_figure, corruptions, title),
        "corruptions_two": partial(corruption_figure, two_corruptions, title),
        "aug_preview": partial(aug_grid.render, originals, augmented, CLASSES, title),
        "lr_find": partial(lr_find_figure, finder),
    }


def class_rows(rng, names):
    return [
        {"class": n, "acc": float(a), "most_confused_with": names[0], "most_confused_share": 0.25}
        for n, a in zip(names, rng.random(len(names)), strict=True)
    ]


def drawn_texts(fig) -> list[Text]:
    """The figure's texts less the tick labels it does not draw: of hidden axes, or of the
    ticks a locator proposes beyond the axis' ends."""
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks |= {id(tick.label1), id(tick.label2)}
            if ax.axison and axis.get_visible():
                drawn += [t for tick in axis._update_ticks() for t in (tick.label1, tick.label2)]
    return [t for t in fig.findobj(Text) if id(t) not in ticks] + drawn


@pytest.fixture(scope="module")
def drawings():
    return card_drawings()


@pytest.mark.parametrize("name", list(card_drawings()))
def test_each_card_fits_tensorboard_and_reads_at_its_size(name, drawings):
    """TensorBoard fits an image into 350 px wide (IMAGES) or about 372 x 215 (TIME SERIES):
    a card is 350 x 200, so both show it about 1:1, with no text under 8 pt (11 px), none past
    its edges, none over another."""
    with matplotlib.rc_context(figures.CARD_RC):
        fig = drawings[name](card=True)
        png = figures.png_bytes(fig)  # lays it out, as the card's PNG is
        renderer = fig.canvas.get_renderer()
        texts = [t for t in drawn_texts(fig) if t.get_visible() and t.get_text().strip()]
        boxes = [t.get_window_extent(renderer) for t in texts]
    with Image.open(io.BytesIO(png)) as img:
        assert img.size == (figures.CARD_PX, figures.CARD_HEIGHT)
    assert texts
    for text, box in zip(texts, boxes, strict=True):
        assert text.get_fontsize() >= figures.CARD_SMALL, text
        assert box.x0 >= -0.5 and box.x1 <= figures.CARD_PX + 0.5, (text, box)
        assert box.y0 >= -0.5 and box.y1 <= fig.bbox.height + 0.5, (text, box)
    upright = [(t, box) for t, box in zip(texts, boxes, strict=True) if t.get_rotation() == 0]
    for (a, box_a), (b, box_b) in itertools.combinations(upright, 2):  # a slanted one's box
        assert not box_a.shrunk(0.97, 0.9).overlaps(box_b.shrunk(0.97, 0.9)), (a, b)  # is wide


def test_cards_say_what_they_leave_out(drawings):
    def card_text(name):
        with matplotlib.rc_context(figures.CARD_RC):
            fig = drawings[name](card=True)
        return " ".join(t.get_text() for t in fig.findobj(Text)).replace("\n", " ")

    assert "6 of them here" in card_text("predictions")
    assert "most frequent confusions (20 classes)" in card_text("confusion_20")
    assert "% of the true class" in card_text("confusion_4_digits")  # 4 digits: percents
    assert "% of the true class" not in card_text("confusion_matrix")  # counts
    assert "images, 7 draws each here" in card_text("aug_preview")


def test_publish_logs_the_card_and_writes_the_full_size(tmp_path, drawings):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    made = []

    def draw(*, card=False):
        made.append(card)
        return drawings["confusion_matrix"](card=card)

    tensorboard = TensorBoardLogger(tmp_path, name="tb")
    path = figures.publish(draw, tmp_path / "cm.png", [tensorboard], "test/confusion_matrix", 3)
    tensorboard.finalize("success")
    events = EventAccumulator(tensorboard.log_dir, size_guidance={"images": 0}).Reload()
    (image,) = events.Images("test/confusion_matrix")
    assert (image.step, image.width) == (3, figures.CARD_PX)
    with Image.open(path) as on_disk:
        assert on_disk.width >= 800  # the full size, to read in the run dir
    assert sorted(made) == [False, True]
    # Each drawn only where it goes: no TensorBoard, no card; no path, no full size.
    made.clear()
    figures.publish(draw, tmp_path / "b.png", [CSVLogger(tmp_path)], "t")
    figures.publish(draw, None, [], "t")
    assert made == [False]


def test_to_uint8_images_undoes_the_normalization():
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    x = torch.stack([normalize(MEAN, STD)(p) for p in pixels])
    back = to_uint8_images(x, MEAN, STD)
    assert back.shape == (4, 32, 32, 3)
    assert np.array_equal(back, pixels.permute(0, 2, 3, 1).numpy())


def feed(collector, targets, preds, batch=16):
    """Batches whose logits say ``preds``; images encode their index in pixel (0, 0, 0)."""
    n = len(targets)
    index = torch.arange(n)
    pixels = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    pixels[:, 0, 0, 0] = index % 256
    pixels[:, 1, 0, 0] = index // 256
    x = torch.stack([normalize(MEAN, STD)(p) for p in pixels])
    logits = torch.full((n, 10), -5.0)
    logits[index, torch.as_tensor(preds)] = 5.0
    for s in range(0, n, batch):
        collector.update(
            x[s : s + batch], logits[s : s + batch], torch.as_tensor(targets[s : s + batch])
        )


def image_ids(examples):
    return [int(im[0, 0, 0]) + 256 * int(im[0, 0, 1]) for im in examples.images]


def test_collector_counts_and_samples():
    rng = np.random.default_rng(1)
    targets = np.repeat(np.arange(10), 50)  # sorted by class, as an image folder is
    preds = np.where(rng.random(500) < 0.7, targets, (targets + 1) % 10)
    collector = PredictionCollector(CLASSES, MEAN, STD, sample_size=64, mistakes_size=32)
    feed(collector, targets.tolist(), preds.tolist())
    results = collector.compute()

    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (targets, preds), 1)
    assert np.array_equal(results.confusion, expected)
    assert results.num_images == 500
    assert results.accuracy == pytest.approx((targets == preds).mean())
    rows = results.per_class()
    assert [r["images"] for r in rows] == [50] * 10
    # Every mistake here is "the next class".
    assert [r["most_confused_with"] for r in rows] == CLASSES[1:] + CLASSES[:1]

    sample, mistakes = results.sample, results.mistakes
    assert len(sample) == 64 and len(mistakes) == 32
    # The picture shows the image it claims to: ids map back to their labels.
    for ex in (sample, mistakes):
        ids = image_ids(ex)
        assert len(set(ids)) == len(ids)
        assert [int(targets[i]) for i in ids] == ex.targets
        assert [int(preds[i]) for i in ids] == ex.preds
    assert all(t != p for t, p in zip(mistakes.targets, mistakes.preds, strict=True))
    # Uniform over the whole stream, not the first 64: a class-sorted set shows many classes.
    assert len(set(sample.targets)) >= 8
    assert mistakes.targets == sorted(mistakes.targets)  # the gallery reads class by class
    assert all(c > 0.99 for c in mistakes.confidences)


def test_collector_is_seeded_and_resets():
    targets = np.arange(300) % 10
    preds = (targets + (np.arange(300) % 3 == 0)) % 10
    a = PredictionCollector(CLASSES, MEAN, STD, sample_size=16, mistakes_size=8, seed=3)
    b = PredictionCollector(CLASSES, MEAN, STD, sample_size=16, mistakes_size=8, seed=3)
    feed(a, targets.tolist(), preds.tolist(), batch=7)
    feed(b, targets.tolist(), preds.tolist(), batch=50)  # batching must not matter
    assert image_ids(a.compute().sample) == image_ids(b.compute().sample)
    a.reset()
    feed(a, targets[:5].tolist(), targets[:5].tolist())
    fresh = a.compute()
    assert fresh.num_images == 5 and len(fresh.sample) == 5 and len(fresh.mistakes) == 0
