"""A net the package has never seen trains, resumes, evaluates and predicts: no framework code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, run_cli_in_process

MY_NETS = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
"""
RUN = ["debug=fast", "data.fake_train_size=160", "data.val_size=32", "data.fake_test_size=32"]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """Where a user keeps their own net: my_nets.py, and a model yaml of their own."""
    root = tmp_path_factory.mktemp("user")
    (root / "my_nets.py").write_text(MY_NETS)
    (root / "conf" / "model").mkdir(parents=True)
    (root / "conf" / "model" / "tiny.yaml").write_text(
        textwrap.dedent("""\
            _target_: cifar_lightning.training.classifier.ImageClassifier
            net:
              _target_: my_nets.TinyNet
              width: 12
        """)
    )
    return root


@pytest.mark.slow
def test_own_net_from_the_command_line(user_dir, monkeypatch):
    run = user_dir / "runs" / "cli"
    args = ["model=custom", "model.net._target_=my_nets.TinyNet", "+model.net.width=32"]
    proc = run_cli("cifar_lightning.train", *RUN, *args, f"hydra.run.dir={run}", cwd=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run / "metrics.json").read_text())
    assert results["status"] == "completed" and results["model"] == "ImageClassifier"
    assert results["params"] == 3 * 32 * 9 + 32 + 32 * 10 + 10  # conv + linear: width 32 reached it
    assert 0 <= results["metrics"]["test/acc"] <= 1

    # Everything else rebuilds the net from the checkpoint alone (my_nets importable).
    monkeypatch.syspath_prepend(str(user_dir))
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    resumed = run_cli_in_process(f"resume={run}", cwd=user_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    common = [ckpt, "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    evaluated = run_cli_in_process(*common, "data.num_workers=0", cwd=user_dir, command="evaluate")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (eval_json,) = user_dir.glob("outputs/evaluate/*/*/eval.json")
    assert json.loads(eval_json.read_text())["model"] == "ImageClassifier"
    image = user_dir / "cat.png"
    Image.fromarray(np.full((40, 50, 3), 120, dtype=np.uint8)).save(image)
    predicted = run_cli_in_process(
        ckpt, f"images=[{image}]", "--json", cwd=user_dir, command="predict"
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)["classified"] == 1


def test_own_model_yaml_through_the_search_path(user_dir, make_cfg, monkeypatch):
    """`hydra.searchpath` adds the user's conf/: model=tiny is their own yaml, nothing else."""
    from cifar_lightning.run.config import build

    cfg = make_cfg(f"hydra.searchpath=[file://{user_dir / 'conf'}]", "model=tiny")
    monkeypatch.syspath_prepend(str(user_dir))
    model = build(cfg.model, "model")
    assert type(model.net).__name__ == "TinyNet" and model.net.head.in_features == 12
    assert model.net.head.out_features == 10
