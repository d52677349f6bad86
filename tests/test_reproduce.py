"""``python -m cifar_lightning.reproduce``: the GPU campaign, run dry on the CPU, so that it is
known to work before any GPU time is spent on it."""

from __future__ import annotations

import json

import pytest

from cifar_lightning.reproduce import main
from cifar_lightning.tools.reproduce import show_in_readme

STEPS = ["self_check", "bench", "seed004", "speedrun", "seed003", "seed000", "seed001",
         "seed002", "speedrun-fp16"]  # fmt: skip


def campaign_args(tmp_path, *extra: str) -> list[str]:
    return [
        "data=fake",
        f"reproduce.out={tmp_path / 'results'}",
        f"reproduce.table={tmp_path / 'docs' / 'results.md'}",
        f"reproduce.readme={tmp_path / 'README.md'}",
        f"paths.output_root={tmp_path / 'outputs'}",
        "reproduce.commit=abc1234",
        *extra,
    ]


@pytest.mark.slow
def test_dry_run_runs_every_step_and_writes_the_json_and_the_table(tmp_path, capsys):
    main(campaign_args(tmp_path, "dry_run=true"))
    (path,) = (tmp_path / "results").glob("*/*.json")
    record = json.loads(path.read_text())
    assert record["dry_run"] and record["commit"] == "abc1234"
    assert list(record["steps"]) == STEPS
    failed = {k: v.get("error") for k, v in record["steps"].items() if v["status"] != "ok"}
    assert not failed
    assert {"torch", "lightning", "cuda"} <= set(record["versions"])
    # Each training run really ran its few steps, end to end, with a test at the end.
    for name in ("seed004", "seed003", "seed002"):
        run = record["steps"][name]["result"]["run"]
        assert run["status"] == "completed" and run["global_step"] == 3, name
        assert 0 <= run["metrics"]["test/acc"] <= 1 and run["timing"]["recompiles"] == 0
    probe = record["steps"]["seed000"]["result"]["plan"]
    assert probe["epochs"] == 100 and probe["predicted_s"] > 0
    rows = {row["recipe"]: row for row in record["rows"]}
    assert rows["seed004"]["reported"] == "92.72% (best epoch)"
    assert rows["seed004"]["epochs"] == "3 steps (dry run)"
    assert rows["seed004"]["images_per_s"] > 0 and rows["seed004"]["x_classic"] > 0
    assert rows["bench resnet9 (batch 16)"]["images_per_s"] > 0
    table = (tmp_path / "results" / "results.md").read_text()
    assert "**Dry run**" in table and "| seed003 | 86.74% |" in table
    assert path.name.endswith("-dry-run.json")
    assert not (tmp_path / "docs").exists()  # a dry run never replaces the measured table
    assert table in capsys.readouterr().out


@pytest.mark.slow
def test_the_self_check_runs_on_a_cpu_and_says_what_it_skipped(tmp_path):
    main(campaign_args(tmp_path, "check=true"))
    (path,) = (tmp_path / "results").glob("*/*.json")
    record = json.loads(path.read_text())
    assert list(record["steps"]) == ["self_check"] and record["check_only"]
    check = record["steps"]["self_check"]
    assert check["status"] == "ok", check.get("error")
    result = check["result"]
    assert result["cuda"] is False and "needs CUDA" in result["host_syncs"]
    tta = result["compiled_tta"]
    assert tta["recompiles_in_timed_segments"] == 0 and tta["valid_time"]
    assert "CUDA graphs need CUDA" in tta["note"] and 0 <= tta["test_acc"] <= 1
    summary = (tmp_path / "results" / "results.md").read_text()
    assert summary.startswith("# Self-check on cpu") and "needs CUDA" in summary


def test_a_budget_of_nothing_is_a_config_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(campaign_args(tmp_path, "reproduce.budget_s=0"))
    assert exit_info.value.code == 2
    assert "reproduce.budget_s=0 leaves no time" in capsys.readouterr().err


def test_a_measured_table_replaces_the_one_between_the_readme_marks(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:start -->\n| old |\n<!-- results:end -->\n\nrest\n")
    show_in_readme(readme, "# Results\n\nMeasured …\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nText.")
    assert readme.read_text() == (
        "# x\n\n<!-- results:start -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "<!-- results:end -->\n\nrest\n"
    )
