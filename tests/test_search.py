"""Our Optuna sweeper (hydra/sweeper=optuna): search space, pruning, storages, the errors
that stop a search before its first trial. The plain search (failed trials, adding trials to
a study) is in test_sweeps.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import run_cli_in_process

# Trials that cost seconds: fake data, no checkpoints/pictures, no test pass.
CHEAP = [
    "debug=fast",
    "callbacks=none",
    "test.enabled=false",
    "data.val_size=32",
    "sched=none",
]
# The default search space, fixed: each test searches only what it is about.
FIXED = ["optim.weight_decay=5e-4", "loss.label_smoothing=0.0"]


def records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


@pytest.mark.slow
def test_pruning_stops_clearly_worse_trials_in_a_new_nested_sweep_dir(tmp_path):
    """lr=1e-5 learns nothing in an epoch: after a good trial (lr=0.5) completes, the median
    pruner stops such a trial after its first epoch of two. The sweep dir does not exist yet
    (it used to crash opening optuna.db there)."""
    sweep_dir = tmp_path / "not" / "yet" / "there"
    proc = run_cli_in_process(
        "hparams_search=optuna",
        f"hydra.sweep.dir={sweep_dir}",
        "optim.lr=choice(0.5,1e-5)",
        *FIXED,
        *CHEAP,
        "trainer.max_epochs=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=11",  # proposes lr 0.5, then 1e-5
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.pruning.startup_trials=1",
        "hydra.sweeper.pruning.warmup_epochs=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = records(sweep_dir)
    assert [jobs[n]["status"] for n in ("0", "1")] == ["completed", "pruned"]
    assert "optim.lr=0.5" in jobs["0"]["overrides"] and jobs["0"]["epochs"] == 2
    pruned = jobs["1"]
    assert "optim.lr=1e-05" in pruned["overrides"]
    assert pruned["epochs"] == 1 and "error" not in pruned
    assert pruned["pruned"].startswith("pruned by the median pruner after epoch 1")
    assert pruned["metrics"]["val/acc_best"] < jobs["0"]["metrics"]["val/acc_best"]
    study = optuna.load_study(study_name="depthwise", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]
    assert [len(t.intermediate_values) for t in study.trials] == [2, 1]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optim.lr": 0.5} and best["best_trial"] == 0
    assert best["trials"] == {"complete": 1, "pruned": 1}
