"""python -m cifar_lightning.summary and python -m cifar_lightning.show_aug, as a user runs them."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from cifar_lightning import show_aug, summary
from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.training.aug_grid import draw, pick_images

FAKE = ["data=fake", "data.fake_train_size=120", "data.fake_test_size=20", "data.val_size=20"]


@pytest.fixture
def in_empty_dir(tmp_path, monkeypatch):
    """The tools must write nothing but what they are asked for: run them in an empty dir."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("model", "params", "mult_adds", "rf"),
    [("depthwise", "82,474", "19.87 M", 25), ("simple_cnn", "399,274", "22.36 M", 48)],
)
def test_summary_prints_the_figures_the_seeds_quote(
    capsys, in_empty_dir, model, params, mult_adds, rf
):
    summary.main([f"model={model}"])
    out = capsys.readouterr().out
    assert re.search(rf"trainable parameters\s+{params}\n", out)
    assert re.search(rf"multiply-adds per image\s+{mult_adds} \(1 multiply-add = 2 FLOPs\)\n", out)
    assert re.search(rf"receptive field\s+{rf} x {rf} px", out)
    assert "Layer (type:depth-idx)" in out and "Conv2d" in out  # torchinfo's layer table
    assert list(in_empty_dir.iterdir()) == []


def test_summary_follows_an_experiment(capsys, in_empty_dir):
    summary.main(["experiment=seed004", "depth=1"])
    assert re.search(r"trainable parameters\s+6,573,120", capsys.readouterr().out)


def test_summary_of_an_unknown_model_lists_the_options(capsys, in_empty_dir):
    with pytest.raises(SystemExit) as stop:
        summary.main(["model=resnet50"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: model=resnet50 is not an option of the model group" in err
    assert "model=resnet9" in err
    assert "Traceback" not in err
    assert list(in_empty_dir.iterdir()) == []


def test_show_aug_writes_the_grid(capsys, in_empty_dir):
    show_aug.main(["aug=seed003", *FAKE, "images=4", "draws=3"])
    path = in_empty_dir / "outputs" / "show_aug" / "seed003.png"
    assert f"wrote {path.relative_to(in_empty_dir)}" in capsys.readouterr().out
    with Image.open(path) as image:
        width, height = image.size
    assert width > 4 * 32 and height > 4 * 32  # 4 columns (stored + 3 draws), 4 rows
    assert list(in_empty_dir.iterdir()) == [in_empty_dir / "outputs"]


def test_show_aug_writes_where_asked(in_empty_dir):
    show_aug.main(["experiment=seed004", *FAKE, "images=2", "draws=2", "out=grids/r9.png"])
    assert (in_empty_dir / "grids" / "r9.png").is_file()


def test_grid_rows_are_one_image_per_class_and_the_draws_repeat():
    dm = CIFAR10DataModule(
        source="fake", fake_train_size=100, fake_test_size=10, val_size=10, batch_size=8
    )
    dm.setup("fit")
    images, labels = pick_images(dm.train_set, 10, 12)
    assert labels == [*range(10), 0, 1] and images.shape == (12, 3, 32, 32)
    flip = __import__("torchvision").transforms.v2.RandomHorizontalFlip(p=0.5)
    first, again = draw(flip, images, 4, seed=1), draw(flip, images, 4, seed=1)
    assert first.shape == (12, 4, 3, 32, 32) and torch.equal(first, again)
    assert not torch.equal(first, draw(flip, images, 4, seed=2))


def test_drawing_leaves_the_global_rng_alone():
    images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    draw(lambda x: x.flip(-1) if torch.rand(()) < 0.5 else x, images, 3, seed=5)
    assert torch.equal(torch.rand(3), expected)
