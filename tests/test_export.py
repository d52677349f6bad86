"""``export``: ONNX and torch.export files that agree with the checkpoint, or none at all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cifar_lightning.errors import CheckpointError, ConfigError, UserError
from cifar_lightning.run.config import compose_config
from cifar_lightning.run.export import export
from cifar_lightning.run.predict import predict


def export_cfg(out: Path, *overrides: str):
    return compose_config(
        [f"paths.output_dir={out}", "data.num_workers=0", *overrides], config_name="export"
    )


@pytest.fixture(scope="module")
def onnx_file(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return out, export(export_cfg(out, f"ckpt_path={trained_run[0]}"))


def test_onnx_export_passes_its_own_check_and_says_so(onnx_file):
    out, summary = onnx_file
    assert summary["file"] == str(out / "model.onnx") and (out / "model.onnx").is_file()
    assert summary["opset"] == 18 and summary["checked_images"] == 64  # the fake test set
    assert summary["max_logit_difference"] <= 1e-4 and summary["top1_agreement"] == 1.0
    assert json.loads((out / "export.json").read_text()) == summary
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no scratch left


def test_predict_gives_the_same_answers_with_the_onnx_file(onnx_file, trained_run, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (40, 56, 3), dtype="uint8")
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    args = [f"images=[{tmp_path}]", "topk=3"]
    ckpt = compose_config([f"ckpt_path={trained_run[0]}", *args], config_name="predict")
    onnx = compose_config(
        [f"ckpt_path={onnx_file[0] / 'model.onnx'}", *args], config_name="predict"
    )
    for a, b in zip(predict(ckpt), predict(onnx), strict=True):
        assert [c for c, _ in a.top] == [c for c, _ in b.top]
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-5)


def test_torch_export_and_the_bad_inputs(trained_run, tmp_path, monkeypatch):
    summary = export(
        export_cfg(tmp_path / "a", f"ckpt_path={trained_run[0]}", "format=torch_export")
    )
    assert Path(summary["file"]).name == "model.pt2" and summary["top1_agreement"] == 1.0
    with pytest.raises(ConfigError, match="format='tflite' is not an export format"):
        export(export_cfg(tmp_path / "b", f"ckpt_path={trained_run[0]}", "format=tflite"))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write"):
        export(export_cfg(tmp_path / "c", f"ckpt_path={trained_run[0]}", f"out={blocker}/m.onnx"))
    # A model that does not survive the export is refused, and nothing is left behind.
    wrong = lambda fmt, path, images: np.zeros((len(images), 10), dtype=np.float32)  # noqa: E731
    monkeypatch.setattr("cifar_lightning.run.export.run_exported", wrong)
    with pytest.raises(UserError, match="does not match the checkpoint's"):
        export(export_cfg(tmp_path / "d", f"ckpt_path={trained_run[0]}"))
    assert not list((tmp_path / "d").glob("*.onnx")) and not list((tmp_path / "d").glob(".*"))
    garbage = tmp_path / "model.onnx"
    garbage.write_text("not a model")
    cfg = compose_config([f"ckpt_path={garbage}", f"images=[{blocker}]"], config_name="predict")
    with pytest.raises(CheckpointError, match="is not a readable ONNX model"):
        predict(cfg)
