"""``predict``: any image file, a clear line for what is not one, an exit code that tells."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from cifar_lightning.errors import ConfigError
from cifar_lightning.run.config import compose_config
from cifar_lightning.run.predict import load_image, predict, report
from conftest import CLASSES, assert_png, run_cli


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A 32x32 PNG, a 200x120 JPEG, a folder with odd modes, a text file posing as an image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "small.png")
    Image.fromarray(rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)).save(root / "wide.jpg")
    folder = root / "folder"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8), "RGBA").save(
        folder / "alpha.png"
    )
    Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)).save(folder / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).convert("P").save(
        folder / "palette.gif"
    )
    (folder / "notes.md").write_text("not an image, and not named like one: skipped")
    (root / "notes.txt").write_text("a text file the user named explicitly")
    (root / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return root


def predict_cfg(ckpt: str, *overrides: str):
    return compose_config([f"ckpt_path={ckpt}", *overrides], config_name="predict")


def test_every_readable_image_is_classified(trained_run, photos):
    _, results = trained_run
    images = f"images=[{photos / 'small.png'},{photos / 'wide.jpg'},{photos / 'folder'}]"
    predictions = predict(predict_cfg(results["best_checkpoint"], images, "topk=5"))
    names = [Path(p.path).name for p in predictions]
    assert names == ["small.png", "wide.jpg", "alpha.png", "grey16.png", "palette.gif"]
    for p in predictions:
        assert p.error is None and len(p.top) == 5
        assert {c for c, _ in p.top} <= set(CLASSES)
        probs = [prob for _, prob in p.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert p.image.shape == (32, 32, 3) and p.image.dtype == np.uint8


def test_unreadable_files_get_an_error_and_the_rest_still_run(trained_run, photos, tmp_path):
    _, results = trained_run
    inputs = [
        photos / "small.png",
        photos / "notes.txt",
        photos / "fake.jpg",
        tmp_path / "nope.png",
    ]
    out_json = tmp_path / "out" / "predictions.json"
    cfg = predict_cfg(
        results["best_checkpoint"],
        f"images=[{','.join(map(str, inputs))}]",
        f"output={out_json}",
        f"plot={tmp_path / 'plot.png'}",
    )
    predictions = predict(cfg)
    assert [p.error is None for p in predictions] == [True, False, False, False]
    assert "not a readable image" in predictions[1].error
    assert "not a readable image" in predictions[2].error
    assert predictions[3].error == "no such file or folder"

    out, err = Console(record=True, width=200), Console(record=True, width=200)
    assert report(predictions, cfg, out, err) == 1
    errors = err.export_text()
    assert f"error: {inputs[1]}: not a readable image" in errors
    assert "1 classified, 3 failed" in errors
    assert "small.png" in out.export_text()
    written = json.loads(out_json.read_text())
    assert written["classified"] == 1 and written["failed"] == 3
    assert written["predictions"][0]["top"][0]["class"] in CLASSES
    assert "error" in written["predictions"][1]
    assert_png(tmp_path / "plot.png")
    assert report(predictions[:1], cfg, Console(file=io.StringIO()), err) == 0  # all fine


def test_resizing_keeps_proportions_or_stretches(tmp_path):
    # Three vertical bands, red | green | blue, 96x32: the centre crop is all green.
    bands = np.zeros((32, 96, 3), dtype=np.uint8)
    bands[:, :32, 0] = bands[:, 32:64, 1] = bands[:, 64:, 2] = 255
    Image.fromarray(bands).save(tmp_path / "bands.png")
    crop = load_image(tmp_path / "bands.png", "crop")
    stretch = load_image(tmp_path / "bands.png", "stretch")
    assert crop.shape == stretch.shape == (32, 32, 3)
    assert crop[:, :, 1].min() > 200 and crop[:, :, [0, 2]].max() < 60
    assert stretch[:, 2, 0].min() > 200 and stretch[:, -3, 2].min() > 200


def test_transparency_is_laid_over_white(tmp_path):
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").min() == 255


def test_bad_options(trained_run):
    _, results = trained_run
    ckpt = results["best_checkpoint"]
    with pytest.raises(ConfigError, match="no images given"):
        predict(predict_cfg(ckpt))
    with pytest.raises(ConfigError, match="resize='zoom'"):
        predict(predict_cfg(ckpt, "images=a.png", "resize=zoom"))
    with pytest.raises(ConfigError, match="no checkpoint given"):
        predict(compose_config(["images=a.png"], config_name="predict"))
    with pytest.raises(ConfigError, match="temperature=0 must be positive"):
        predict(predict_cfg(ckpt, "images=a.png", "temperature=0"))


def test_a_temperature_softens_the_probabilities_and_keeps_the_ranking(trained_run, photos):
    ckpt, images = trained_run[1]["best_checkpoint"], f"images=[{photos / 'small.png'}]"
    (plain,) = predict(predict_cfg(ckpt, images, "topk=10"))
    (hot,) = predict(predict_cfg(ckpt, images, "topk=10", "temperature=4"))
    assert [c for c, _ in hot.top] == [c for c, _ in plain.top]
    assert hot.top[0][1] < plain.top[0][1] and hot.top[-1][1] > plain.top[-1][1]


@pytest.mark.slow
def test_cli_json_and_exit_code(trained_run, photos, tmp_path):
    _, results = trained_run
    ckpt = f"ckpt_path={results['best_checkpoint']}"
    proc = run_cli(
        "cifar_lightning.predict",
        ckpt,
        "images=[small.png,wide.jpg,notes.txt]",
        "--json",
        cwd=photos,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)  # stdout is pure JSON
    assert [p["path"] for p in payload["predictions"]] == ["small.png", "wide.jpg", "notes.txt"]
    assert "error: notes.txt: not a readable image" in proc.stderr
    assert "Traceback" not in proc.stderr

    assert not list(photos.glob("outputs")) and not list(photos.glob("*.log")), "writes nothing"
