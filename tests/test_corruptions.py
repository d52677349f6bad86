"""CIFAR-10-C corruptions: each operation against the library call the paper's generator makes,
the sequential glass-blur sweep against a plain loop, the noise draws against their
distributions, and ``evaluate corruptions=true`` end to end (made here, and from the published
``.npy`` files), with its bad inputs."""

from __future__ import annotations

import colorsys
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_lightning.data import corruptions as C
from conftest import assert_png, run_cli_in_process

scipy_ndimage = pytest.importorskip("scipy.ndimage")
cv2 = pytest.importorskip("cv2")  # both come with albumentations


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 32, 32, 3))


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def test_filters_and_resampling_match_scipy_and_opencv():
    img = images()
    x = nchw(img)
    for sigma, mode, truncate in [(0.4, "nearest", 4.0), (1.0, "nearest", 4.0),
                                  (6.4, "reflect", 3.0), (0.96, "reflect", 3.0)]:  # fmt: skip
        ref = [scipy_ndimage.gaussian_filter(i, (sigma, sigma, 0), mode=mode, truncate=truncate)
               for i in img]  # fmt: skip
        got = nhwc(C.gaussian_blur(x, sigma, mode, truncate))
        np.testing.assert_allclose(got, np.stack(ref), atol=1e-12)
    for factor in (1.03, 1.17, 1.25, 1.75, 2.25):
        crop = math.ceil(32 / factor)
        top = (32 - crop) // 2
        ref = np.stack([scipy_ndimage.zoom(i[top : top + crop, top : top + crop],
                                           (factor, factor, 1), order=1) for i in img])  # fmt: skip
        trim = (ref.shape[1] - 32) // 2
        got = nhwc(C.clipped_zoom(x, factor))
        np.testing.assert_allclose(got, ref[:, trim : trim + 32, trim : trim + 32], atol=1e-12)
    for severity, (radius, alias) in enumerate(((0.3, 0.4), (0.5, 0.6), (1.5, 0.1)), start=1):
        grid = np.arange(-8, 9)
        gx, gy = np.meshgrid(grid, grid)
        disk = ((gx**2 + gy**2) <= radius**2).astype(np.float32)
        kernel = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3), sigmaX=alias)
        ref = np.stack([cv2.filter2D(i.astype(np.float32), -1, kernel) for i in img])
        level = {1: 1, 2: 3, 3: 5}[severity]
        got = nhwc(C.defocus_blur(x.float(), level, torch.Generator()))
        np.testing.assert_allclose(got, ref, atol=1e-6)
    # The affine step of elastic_transform: cv2.warpAffine with the reflect-101 border.
    forward = np.array([[1.02, 0.05, -0.7], [-0.03, 0.97, 1.1]])
    ref = np.stack([cv2.warpAffine(i.astype(np.float32), forward, (32, 32),
                                   borderMode=cv2.BORDER_REFLECT_101) for i in img])  # fmt: skip
    back = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))
    rows, cols = np.meshgrid(np.arange(32.0), np.arange(32.0), indexing="ij")
    src_x, src_y = (back[k, 0] * cols + back[k, 1] * rows + back[k, 2] for k in (0, 1))
    got = nhwc(C.resample(x.float(), torch.tensor(src_y).expand(3, 32, 32),
                          torch.tensor(src_x).expand(3, 32, 32), "mirror"))  # fmt: skip
    assert np.abs(got - ref).max() < 1e-4  # OpenCV interpolates in 1/32 pixel steps
    # Its displacement step: scipy's map_coordinates, order 1, reflect border.
    dy, dx = np.random.default_rng(1).uniform(-3, 3, (2, 32, 32))
    ref = np.stack([np.stack([scipy_ndimage.map_coordinates(i[..., c], [rows + dy, cols + dx],
                                                            order=1, mode="reflect")
                              for c in range(3)], -1) for i in img])  # fmt: skip
    got = nhwc(C.resample(x, torch.tensor(rows + dy).expand(3, 32, 32),
                          torch.tensor(cols + dx).expand(3, 32, 32), "reflect"))  # fmt: skip
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_brightness_is_an_hsv_value_shift():
    img = images(1)
    for severity, c in zip(C.SEVERITIES, (0.05, 0.1, 0.15, 0.2, 0.3), strict=True):
        got = nhwc(C.brightness(nchw(img), severity, torch.Generator()))[0]
        for p in [(0, 0), (5, 17), (31, 31), (12, 3)]:
            h, s, v = colorsys.rgb_to_hsv(*img[0][p])
            np.testing.assert_allclose(got[p], colorsys.hsv_to_rgb(h, s, min(v + c, 1)), atol=1e-12)


def test_glass_blur_is_the_sequential_sweep_of_its_definition():
    """Later swaps move earlier ones: the batched sweep must equal a per-image loop."""
    x = nchw(images(2)).float()
    got = C.glass_blur(x, 4, torch.Generator().manual_seed(3))  # sigma 0.25, two sweeps
    g = torch.Generator().manual_seed(3)
    places = [(r, q) for r in range(31, 1, -1) for q in range(31, 1, -1)]
    offsets = torch.randint(-1, 1, (2, len(places), 2, 2), generator=g).numpy()
    blurred = (torch.floor(C.gaussian_blur(x, 0.25) * 255) / 255).numpy()
    for n in range(2):
        img = blurred[n].copy()
        for sweep in range(2):
            for (row, col), d in zip(places, offsets[sweep, :, n], strict=True):
                other = (row + d[1], col + d[0])
                img[:, row, col], img[:, other[0], other[1]] = (
                    img[:, other[0], other[1]].copy(), img[:, row, col].copy())  # fmt: skip
        want = C.gaussian_blur(torch.from_numpy(img)[None], 0.25)[0]
        torch.testing.assert_close(got[n], want)


def test_motion_blur_follows_its_angle():
    """One bright pixel smears into a one-sided streak: leftwards at 0°, upwards at 90°."""
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 16, 16] = 1
    out = C.motion_blur(x, 6, 2.0, torch.tensor([0.0, 90.0]))
    left = out[0, 0, 16].nonzero().flatten().tolist()
    up = out[1, 0, :, 16].nonzero().flatten().tolist()
    assert left == up == list(range(4, 17))  # 13 taps: 2⌈6⌉+1
    assert out[0, 0, 16, 16] > out[0, 0, 16, 15] > out[0, 0, 16, 10]
    assert out.sum(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])


def test_noise_draws_have_their_distributions():
    flat = torch.full((20, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    for severity, c in zip(C.SEVERITIES, (0.04, 0.06, 0.08, 0.09, 0.10), strict=True):
        noise = C.gaussian_noise(flat, severity, g) - 0.5
        assert abs(noise.mean()) < 0.002 and noise.std() == pytest.approx(c, rel=0.03)
    for severity, c in zip(C.SEVERITIES, (500, 250, 100, 75, 50), strict=True):
        shot = C.shot_noise(flat, severity, g)
        assert shot.mean() == pytest.approx(0.5, abs=0.003)
        assert shot.var() == pytest.approx(0.5 / c, rel=0.05)  # Poisson: variance = mean
    for severity, c in zip(C.SEVERITIES, (0.01, 0.02, 0.03, 0.05, 0.07), strict=True):
        hit = C.impulse_noise(flat, severity, g)
        share = (hit != 0.5).float().mean()
        assert share == pytest.approx(c, rel=0.1)
        assert (hit == 1).float().mean() == pytest.approx(c / 2, rel=0.15)


def test_every_corruption_at_every_severity():
    pixels = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8) * 255, size=(32, 32),
                                             mode="bilinear").byte()  # fmt: skip
    assert len(C.NAMES) == 15 and set(C.NAMES) == set(C.CORRUPTIONS)
    for name in C.NAMES:
        change = []
        for severity in C.SEVERITIES:
            out = C.corrupt(pixels, name, severity, seed=1)
            assert out.dtype == torch.uint8 and out.shape == pixels.shape, name
            assert torch.equal(out, C.corrupt(pixels, name, severity, seed=1)), "seeded"
            change.append((out.float() - pixels.float()).abs().mean().item())
        assert min(change) > 0.3, (name, change)
        if name != "elastic_transform":  # its severity 1 has its largest affine shift
            assert change[4] > change[0], (name, change)
    assert not torch.equal(C.corrupt(pixels, "fog", 3, seed=1), C.corrupt(pixels, "fog", 3, 2))


def write_published(root: Path, names: list[str], per_severity: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        data = rng.integers(0, 256, (5 * per_severity, 32, 32, 3), dtype=np.uint8)
        np.save(root / f"{name}.npy", data)
    np.save(root / "labels.npy", rng.integers(0, 10, 5 * per_severity).astype(np.uint8))
    return root


def test_published_files_are_read_per_severity_and_checked(tmp_path):
    root = write_published(tmp_path / "c10c", ["fog"], per_severity=6)
    data, labels = np.load(root / "fog.npy"), np.load(root / "labels.npy")
    got, got_labels = C.load_published(C.open_published(root, ["fog"]), "fog", 3, 4)
    assert np.array_equal(got, data[12:16]) and np.array_equal(got_labels, labels[12:16])
    with pytest.raises(C.DataError, match=r"snow\.npy does not exist"):
        C.open_published(root, ["fog", "snow"])
    np.save(root / "snow.npy", np.zeros((30, 28, 28, 3), np.uint8))
    with pytest.raises(C.DataError, match=r"uint8 \(30, 28, 28, 3\); CIFAR-10-C files are"):
        C.open_published(root, ["snow"])
    np.save(root / "snow.npy", np.zeros((25, 32, 32, 3), np.uint8))
    with pytest.raises(C.DataError, match=r"has 25 images and labels\.npy 30"):
        C.open_published(root, ["snow"])


EVAL = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "data.num_workers=0"]


def evaluate_cli(tmp_path: Path, ckpt: Path, *args: str):
    out = tmp_path / "out"
    proc = run_cli_in_process(f"ckpt_path={ckpt}", f"hydra.run.dir={out}", *EVAL, *args,
                              cwd=tmp_path, command="evaluate")  # fmt: skip
    return proc, out


def test_evaluate_corruptions_table_heatmap_and_summary(trained_run, tmp_path):
    run_dir, _ = trained_run
    proc, out = evaluate_cli(tmp_path, run_dir, "corruptions=true", "corruptions.images=32")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())["corruptions"]
    assert list(result["acc"]) == list(C.NAMES) and result["images"] == 32
    assert all(len(row) == 5 and all(0 <= a <= 1 for a in row) for row in result["acc"].values())
    cells = [a for row in result["acc"].values() for a in row]
    assert result["mean_corruption_acc"] == pytest.approx(np.mean(cells))
    assert result["mean_corruption_error"] == pytest.approx(1 - np.mean(cells))
    clean = result["clean_acc"]
    assert result["relative_drop"] == pytest.approx((clean - np.mean(cells)) / clean)
    assert set(result["family_acc"]) == {"noise", "blur", "weather", "digital"}
    assert_png(out / "corruptions.png", (500, 500))
    text = " ".join(proc.stdout.split())
    assert "Accuracy under corruption, 32 test images" in text
    assert "mean corruption accuracy" in text and "corruptions.png" in text
    assert "jpeg_compression" in text


def test_evaluate_on_published_files(trained_run, tmp_path):
    """``corruptions.source``: the files' own images and labels, scored as given."""
    run_dir, _ = trained_run
    root = write_published(tmp_path / "c10c", ["fog", "contrast"], per_severity=8)
    proc, out = evaluate_cli(
        tmp_path, run_dir, "corruptions=true", f"corruptions.source={root}",
        "corruptions.names=[fog,contrast]", "corruptions.severities=[2,5]",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "eval.json").read_text())["corruptions"]
    assert result["source"] == str(root) and result["severities"] == [2, 5]
    assert set(result["acc"]) == {"fog", "contrast"}
    # Eight images per severity in the files: that many are scored, however many test images.
    assert all(a * 8 == round(a * 8) for row in result["acc"].values() for a in row)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["corruptions.names=[fogg]"],
            2,
            "'fogg' is not a CIFAR-10-C corruption (did you mean fog?)",
        ),
        (["corruptions.severities=[0,6]"], 2, "corruptions.severities=[0, 6] must be severities"),
        (["split=val"], 2, "corruptions=true corrupts the test set"),
        (["corruptions.source=no/such/dir"], 1, "is not a folder"),
        (["corruptions.source={c10c}"], 1, "gaussian_noise.npy does not exist"),
    ],
    ids=["unknown_name", "severity", "split", "no_folder", "missing_file"],
)
def test_bad_corruption_settings(trained_run, tmp_path, args, code, message):
    run_dir, _ = trained_run
    root = write_published(tmp_path / "c10c", ["fog"], per_severity=2)
    args = [a.replace("{c10c}", str(root)) for a in args]
    proc, out = evaluate_cli(tmp_path, run_dir, "corruptions=true", *args)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert message in proc.stderr and "  fix: " in proc.stderr, proc.stderr[-3000:]
    assert not out.exists(), "nothing written"
