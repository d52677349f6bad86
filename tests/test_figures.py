"""The drawing functions and the prediction collector, without training anything."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_lightning.data.datamodule import normalize
from cifar_lightning.training import figures
from cifar_lightning.training.predictions import PredictionCollector, to_uint8_images
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
