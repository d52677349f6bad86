"""``data=cifar100``: 100-class heads on every model, the download's offline message, an image
folder in its place, and figures that stay readable with 100 classes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.data.sources import CIFAR100_CLASSES, CIFAR100_SUPERCLASSES, superclasses
from cifar_lightning.errors import DataError
from cifar_lightning.run.config import build, compose_config
from cifar_lightning.training.figures import group_confusion
from conftest import assert_png, run_cli_in_process, write_image_folder

MODELS = ("simple_cnn", "medium_cnn", "depthwise", "vgg", "resnet9", "resnet18", "airbench_net")


def test_the_superclasses_cover_the_100_classes_in_torchvision_order():
    from torchvision.datasets import CIFAR100

    assert len(CIFAR100_SUPERCLASSES) == 20
    assert all(len(group) == 5 for group in CIFAR100_SUPERCLASSES.values())
    assert len(CIFAR100_CLASSES) == 100 and list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    cfg = compose_config(["data=cifar100"])
    assert tuple(cfg.data.classes) == CIFAR100_CLASSES and cfg.data.source == "cifar100"
    assert superclasses(CIFAR100_CLASSES) is CIFAR100_SUPERCLASSES
    assert superclasses(cfg.data.classes[:10]) is None
    assert CIFAR100.meta["key"] == "fine_label_names"  # what torchvision's labels are
    # Summing into superclasses keeps every image, on and off the diagonal.
    matrix = np.random.default_rng(0).integers(0, 5, (100, 100))
    grouped = group_confusion(matrix, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES)
    assert grouped.shape == (20, 20) and grouped.sum() == matrix.sum()
    fish = [CIFAR100_CLASSES.index(n) for n in CIFAR100_SUPERCLASSES["fish"]]
    assert grouped[1, 1] == matrix[np.ix_(fish, fish)].sum()


@pytest.mark.parametrize("model", MODELS)
def test_every_model_gets_a_100_class_head_and_learns(model):
    cfg = compose_config(["data=cifar100", f"model={model}"])
    net = build(cfg.model, "model")
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 17, 55, 99])
    net.train()
    logits = net(x)
    assert logits.shape == (4, 100)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_offline_download_names_the_local_copy_way(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = CIFAR10DataModule(source="cifar100", root=str(tmp_path), classes=CIFAR100_CLASSES)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    assert "could not download CIFAR-100" in e.value.problem
    assert "data=cifar100 data.source=imagefolder data.root=PATH" in e.value.fix
    assert "cifar-100-python.tar.gz" in e.value.fix


def test_trains_and_evaluates_from_an_image_folder(tmp_path, trained_run):
    """100 classes from an image folder: the run's pictures and evaluate's table stay readable,
    and a 10-class checkpoint refuses CIFAR-100 in one line."""
    folder = write_image_folder(tmp_path / "c100", per_class=2, classes=list(CIFAR100_CLASSES))
    common = ["trainer.enable_progress_bar=false", "data.num_workers=0", "data.batch_size=50"]
    run = tmp_path / "run"
    proc = run_cli_in_process(
        "debug=fast", "data=cifar100", "data.source=imagefolder", f"data.root={folder}",
        "data.val_size=50", "data.download=false", f"hydra.run.dir={run}", *common, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for picture in ("confusion_matrix", "class_accuracy", "predictions", "misclassified"):
        assert_png(run / f"{picture}.png")
    with Image.open(run / "confusion_matrix.png") as img:
        assert img.width <= 1800, "summed into 20 superclasses, not a 100x100 poster"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["metrics"]["test/acc_top5"] <= 1

    out = tmp_path / "eval"
    proc = run_cli_in_process(f"ckpt_path={run}", f"hydra.run.dir={out}", *common, cwd=tmp_path,
                              command="evaluate")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the 20 worst of 100 classes (all in eval.json)" in " ".join(proc.stdout.split())
    assert len(json.loads((out / "eval.json").read_text())["per_class"]) == 100

    proc = run_cli_in_process(f"ckpt_path={trained_run[0]}", "data=cifar100", f"data.root={folder}",
                              "data.source=imagefolder", *common, cwd=tmp_path,
                              command="evaluate")  # fmt: skip
    assert proc.returncode == 2
    assert "the data has 100 classes" in proc.stderr and "the model 10" in proc.stderr
