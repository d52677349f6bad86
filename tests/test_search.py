"""Our Optuna sweeper (hydra/sweeper=optuna): search space, pruning, storages, the errors
that stop a search before its first trial. The plain search (failed trials, adding trials to
a study) is in test_sweeps.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import assert_png, run_cli_in_process

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

    # report: the pruned trial as pruned (not failed), the best trial, Optuna's history plot.
    proc = run_cli_in_process(str(sweep_dir), cwd=tmp_path, command="report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 jobs: 1 completed, 1 pruned." in " ".join(proc.stdout.split())
    text = (sweep_dir / "report.md").read_text()
    assert "| completed, best trial |" in text
    assert "| pruned by the median pruner after epoch 1 (val/acc_best=" in text
    assert "Study 'depthwise' (maximize) in sqlite:///" in text and "1 complete, 1 pruned" in text
    assert "Best trial: 0 (job 0), value " in text and "optim.lr=0.5" in text
    assert "![Optimization history](search_history.png)" in text
    assert "Parameter importances: not drawn (needs 2 completed trials" in text
    assert_png(sweep_dir / "search_history.png")


# --- errors: one message, exit code 2, before any trial -----------------------------------


def search_fails(tmp_path: Path, *overrides: str) -> str:
    """Run a search that must be refused; returns its message. Nothing may have run."""
    sweep_dir = tmp_path / "sweep"
    proc = run_cli_in_process(
        "hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}", *CHEAP, *overrides, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert not list(sweep_dir.glob("*/metrics.json"))  # no trial ran
    assert "Traceback" not in proc.stderr
    return " ".join(proc.stderr.split())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["hydra.sweeper.storage=postgresql://nobody@127.0.0.1:9/nowhere"],
            "cannot reach the study's storage postgresql://nobody@127.0.0.1:9/nowhere",
        ),
        (
            ["hydra.sweeper.storage=sqlite:///no/such/folder/optuna.db"],
            "the folder",
        ),
        (["hydra.sweeper.storage=nonsense"], "is not a storage URL"),
        (["hydra.sweeper.params=null"], "the search space is empty"),
        (["optim.lr=interval(0.5,0.1)"], "optim.lr: interval(0.5, 0.1) is empty"),
        (["optim.lr=tag(log, interval(0.0,0.1))"], "a log-scale interval must be above zero"),
        (["optim.lrr=interval(0.1,0.5)"], "optim.lrr"),
        (["hydra.sweeper.pruner=sometimes"], "hydra.sweeper.pruner=sometimes is not a pruner"),
    ],
    ids=[
        "unreachable",
        "no-folder",
        "bad-url",
        "empty",
        "reversed",
        "log-zero",
        "no-key",
        "pruner",
    ],
)
def test_a_search_that_cannot_run_says_why_before_any_trial(tmp_path, overrides, message):
    assert message in search_fails(tmp_path, *overrides)


def test_a_study_of_that_name_with_another_direction_is_refused(tmp_path):
    database = tmp_path / "studies.db"
    optuna.create_study(study_name="depthwise", storage=f"sqlite:///{database}")  # minimize
    said = search_fails(tmp_path, f"hydra.sweeper.storage=sqlite:///{database}")
    assert "the study 'depthwise'" in said and "is set to minimize" in said
    assert "hydra.sweeper.direction=minimize" in said


def test_journal_storage_is_shared_through_its_file(tmp_path):
    from cifar_lightning.run.search.storage import open_storage

    url = f"journal:{tmp_path / 'study.log'}"
    one = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    one.tell(one.ask(), 0.5)
    other = optuna.load_study(study_name="s", storage=open_storage(url))  # as another process
    assert [t.value for t in other.trials] == [0.5]


# --- storages ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    import postgres

    if (reason := postgres.why_not()) is not None:
        pytest.skip(reason)
    with postgres.server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_real_postgresql_server(tmp_path, postgres_url):
    """As on two machines: two sweep commands, one study in PostgreSQL, each worker its own
    sweep dir; each worker's trial ends up in the one study, with the value its run recorded."""
    tiny = [*CHEAP, "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cifar_lightning.train",
                "hparams_search=optuna",
                f"hydra.sweep.dir={tmp_path / f'worker{w}'}",
                f"hydra.sweeper.storage={postgres_url}",
                "hydra.sweeper.study_name=shared",
                "hydra.sweeper.n_trials=1",
                f"hydra.sweeper.sampler.seed={w}",
                *tiny,
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        for w in (0, 1)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in workers]
    assert [p.returncode for p in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    jobs = [j for w in (0, 1) for j in records(tmp_path / f"worker{w}").values()]
    assert sorted(j["metrics"]["val/acc_best"] for j in jobs) == sorted(
        t.value for t in study.trials
    )
    assert all(j["status"] == "completed" for j in jobs) and len(jobs) == 2


def test_report_plots_parameter_importances_of_a_search(tmp_path):
    from cifar_lightning.run.search import summary

    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("optim.lr", 0, 1) + t.suggest_int("x", 0, 1), 4)
    made = summary.plots(summary.SearchSummary(study, "in memory"), tmp_path)
    assert made == {
        "history": tmp_path / "search_history.png",
        "importance": tmp_path / "search_importance.png",
    }
    for png in made.values():
        assert_png(png)
