"""``python -m cifar_lightning.bench``: every loop runs and reports, the last line is JSON."""

from __future__ import annotations

import json
import re

import pytest

from cifar_lightning.errors import ConfigError
from cifar_lightning.run.config import compose_config
from cifar_lightning.tools.bench import bench
from conftest import run_cli

TINY = [
    "data.fake_train_size=256",
    "data.batch_size=32",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "bench.warmup_steps=1",
    "bench.steps=2",
]


@pytest.mark.slow
def test_train_mode_times_all_three_loops(tmp_path):
    cfg = compose_config([*TINY, f"paths.output_dir={tmp_path}"], config_name="bench")
    result = bench(cfg)
    assert set(result["loops"]) == {"classic", "plain", "lightning"}
    for name, loop in result["loops"].items():
        assert loop["images"] == 2 * 32, name  # two timed steps of full batches
        assert loop["images_per_s"] > 0 and loop["ms_per_step"] > 0
        assert 0 < loop["mfu"] < 1
    assert result["loops"]["classic"]["precision"] == "32-true"
    assert result["ratios"]["plain_vs_classic"] == pytest.approx(
        result["loops"]["plain"]["images_per_s"] / result["loops"]["classic"]["images_per_s"],
        rel=1e-2,
    )
    assert result["lightning_overhead_ms_per_step"] == pytest.approx(
        result["loops"]["lightning"]["ms_per_step"] - result["loops"]["plain"]["ms_per_step"],
        abs=1e-2,
    )
    # Depthwise net: 39 M multiply-adds forward, so 2-3x that in FLOPs for a training step.
    assert 100e6 < result["flops_per_image"] < 250e6
    assert "measured fp32 matmul" in result["peak"] and result["device"].startswith("cpu")
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(result))


@pytest.mark.slow
def test_speedrun_net_whitens_from_the_runs_data_in_the_lightning_loop(tmp_path):
    """The speedrun net asks trainer.datamodule for its whitening sample: the loop must have one."""
    overrides = [
        *TINY,
        "model=airbench_net",
        "model.net.widths=[8,16,16]",
        "bench.loops=[lightning]",
    ]
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}"], config_name="bench")
    result = bench(cfg)
    assert result["model"] == "AirbenchClassifier"
    assert result["loops"]["lightning"]["images"] == 2 * 32


@pytest.mark.slow
def test_cli_aug_mode_prints_a_table_then_one_json_line(tmp_path):
    proc = run_cli(
        "cifar_lightning.bench",
        "mode=aug",
        "data.fake_train_size=600",
        "bench.aug_images=512",
        "bench.aug_batched_seconds=0",
        f"paths.output_root={tmp_path}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert "Augmentation only, aug=crop_flip" in proc.stdout
    result = json.loads(lines[-1])
    assert result["mode"] == "aug" and result["images"] == 512 and result["threads"] == 1
    for name in ("pil", "tensor", "batched"):
        assert result["pipelines"][name]["images_per_s_per_core"] > 0
    # The fast path's point: on whole batches the same augmentation costs far less.
    assert result["ratios"]["batched_vs_pil"] > 2
    (saved,) = tmp_path.glob("*/*/bench.json")
    assert json.loads(saved.read_text()) == result


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mode=fast", "mode=fast is not a benchmark mode"),
        ("bench.loops=[classic,turbo]", "bench.loops=[classic,turbo] names no loop or an unknown"),
        ("trainer.precision=bf16-true", "trainer.precision=bf16-true is not one the benchmark"),
        ("bench.steps=0", "need warmup_steps >= 0 and steps >= 1"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, override, message):
    cfg = compose_config([*TINY, override, f"paths.output_dir={tmp_path}"], config_name="bench")
    with pytest.raises(ConfigError, match=re.escape(message)):
        bench(cfg)
