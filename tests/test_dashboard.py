"""What a user sees of a run in their tools: TensorBoard asked over its own HTTP API, as its web
page asks it; the CSV log; an MLflow tracking store read back with MLflow's client.

One tiny run through the real entry point (Hydra job, so its run dir and choices are a user's)
with three loggers at once feeds every test here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import pytest
import yaml
from PIL import Image

from cifar_lightning.run import loggers
from cifar_lightning.run.config import run_label
from cifar_lightning.run.loggers import FIRST_CHARTS
from cifar_lightning.training import figures
from cifar_lightning.training.callbacks.log_interval import epoch_log_interval
from conftest import run_cli_in_process

HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
HPARAMS = ("model", "params", "optimizer", "lr", "weight_decay", "batch_size", "epochs")
HPARAMS += ("schedule", "aug", "label_smoothing", "seed", "precision", "data", "run")


@pytest.fixture(scope="module")
def dashboard_run(tmp_path_factory):
    """(run dir, metrics.json, mlflow tracking URI, warnings) of one debug=fast run of 1 epoch
    (8 steps) with trainer.log_every_n_steps=auto and TensorBoard, CSV and MLflow loggers."""
    tmp = tmp_path_factory.mktemp("dashboard")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    loggers = "[tensorboard,csv,mlflow]" if HAVE_MLFLOW else "[tensorboard,csv]"
    args = ["debug=fast", f"logger={loggers}", "trainer.log_every_n_steps=auto"]
    args += [f"paths.output_root={tmp / 'outputs'}", f"paths.data_dir={tmp / 'data'}"]
    if HAVE_MLFLOW:
        args.append(f"logger.mlflow.tracking_uri={uri}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = run_cli_in_process(*args, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = (tmp / "outputs").glob("*/*/metrics.json")
    return metrics.parent, json.loads(metrics.read_text()), uri, [str(w.message) for w in caught]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tensorboard(dashboard_run):
    """A TensorBoard server on the run's output root; yields a JSON getter of its API."""
    out = dashboard_run[0].parents[1]
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(out)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def ask(route: str, body: dict | None = None, raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}{route}", data=data)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.read() if raw else json.loads(response.read())

    try:
        deadline = time.monotonic() + 120
        while True:  # up, and done loading the run's events (the hparams come last)
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            with contextlib.suppress(OSError):
                if any(ask("/data/plugin/hparams/experiment", {}).get("hparamInfos") or []):
                    break
            assert time.monotonic() < deadline, "TensorBoard did not load the run in 2 minutes"
            time.sleep(0.5)
        yield ask
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_run_is_named_by_its_time_and_model(dashboard_run, tensorboard):
    run_dir, record, _, _ = dashboard_run
    date, clock = run_dir.parts[-2:]
    assert tensorboard("/data/runs") == [f"{date}/{clock}/tensorboard/depthwise"]
    assert record["run_dir"] == str(run_dir)


def test_scalars_start_with_training_and_have_no_epoch_chart(dashboard_run, tensorboard):
    (tags,) = tensorboard("/data/plugin/scalars/tags").values()
    assert set(FIRST_CHARTS) <= set(tags)
    assert "epoch" not in tags
    (layout,) = [tensorboard("/data/plugin/custom_scalars/layout")]
    first = layout["category"][0]
    assert [c["multiline"]["tag"] for c in first["chart"]] == [[f"^{t}$"] for t in FIRST_CHARTS]


def test_images_are_there_sized_for_their_cards(tensorboard):
    ((run, tags),) = tensorboard("/data/plugin/images/tags").items()
    expected = {"aug/preview", "curves", "test/confusion_matrix", "test/class_accuracy"}
    assert expected | {"test/predictions", "test/misclassified"} <= set(tags)
    for tag in tags:  # as the browser gets them: 350 px wide, the width of an image card
        query = urllib.parse.urlencode({"run": run, "tag": tag, "sample": 0})
        *_, last = tensorboard(f"/data/plugin/images/images?{query}")
        png = tensorboard(f"/data/plugin/images/individualImage?{last['query']}", raw=True)
        with Image.open(io.BytesIO(png)) as img:
            assert img.width == figures.CARD_PX, (tag, img.size)


def test_hparams_are_the_curated_ones_with_the_final_metrics(dashboard_run, tensorboard):
    _, record, _, _ = dashboard_run
    experiment = tensorboard("/data/plugin/hparams/experiment", {"experimentName": ""})
    shown = [h["displayName"] for h in experiment["hparamInfos"]]  # in TensorBoard's order
    assert shown[:5] == ["model", "experiment", "params", "optimizer", "lr"]
    assert set(HPARAMS) <= set(shown) and not any("/" in n for n in shown)
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"test/acc", "test/loss", "val/acc", "val/acc_best"} <= metrics
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0}
    (group,) = tensorboard("/data/plugin/hparams/session_groups", {**request, "sliceSize": 10})[
        "sessionGroups"
    ]
    hparams = {k.split(" ", 1)[1]: v for k, v in group["hparams"].items()}  # "01 model"
    assert (
        group["name"]
        == f"{record['run_dir'].split('/')[-2]}_{Path(record['run_dir']).name} depthwise"
    )
    assert hparams["model"] == "depthwise" and hparams["optimizer"] == "SGD"
    assert hparams["params"] == record["params"] and hparams["data"] == "fake"
    values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
    assert values["test/acc"] == pytest.approx(record["metrics"]["test/acc"])


def test_config_is_in_the_text_tab(tensorboard):
    (tags,) = tensorboard("/data/plugin/text/tags").values()
    assert "config" in tags


def test_training_steps_are_logged_a_few_times_an_epoch(dashboard_run):
    run_dir, record, _, caught = dashboard_run
    assert record["steps_per_epoch"] == 8
    rows = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    loss = header.index("train/loss")
    steps = [int(r.split(",")[header.index("step")]) for r in rows[1:] if r.split(",")[loss]]
    assert steps == [1, 3, 5, 7]  # every 8 // 4 = 2 steps
    assert not [w for w in caught if "smaller than the logging interval" in w]
    assert [epoch_log_interval(n) for n in (391, 98, 10, 3)] == [50, 24, 2, 1]


def test_csv_has_the_curated_hparams(dashboard_run):
    run_dir, record, _, _ = dashboard_run
    hparams = yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text())
    assert set(HPARAMS) <= set(hparams) and hparams["params"] == record["params"]
    assert "net" not in hparams  # the module's own arguments stay out of the loggers


@pytest.mark.skipif(not HAVE_MLFLOW, reason="MLflow is not installed (pip install mlflow)")
def test_mlflow_store_holds_the_run(dashboard_run):
    from mlflow.tracking import MlflowClient

    run_dir, record, uri, _ = dashboard_run
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cifar-lightning")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == f"{run_dir.parts[-2]}_{run_dir.parts[-1]} depthwise"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert set(HPARAMS) <= set(params) and params["model"] == "depthwise"
    assert params["lr"] == "0.05" and params["params"] == str(record["params"])
    metrics = run.data.metrics
    assert metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    assert {"train/loss", "train/lr", "val/acc"} <= set(metrics) and "epoch" not in metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "config.yaml" in artifacts


def test_mlflow_missing_is_one_message(monkeypatch, tmp_path):
    monkeypatch.setattr(loggers, "mlflow_installed", lambda: False)
    args = ("debug=fast", "logger=mlflow", f"paths.output_root={tmp_path}")
    proc = run_cli_in_process(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "logger=mlflow needs MLflow, which is not installed" in proc.stderr
    assert "pip install 'cifar-lightning[mlflow]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_label_reads_the_run_dir():
    assert run_label("outputs/2026-12-02/21-40-05", "train") == "2026-12-02_21-40-05 train"
    assert run_label("outputs/2026-12-02/21-40-05-1", "x") == "2026-12-02_21-40-05-1 x"
    sweep_job = run_label("outputs/multirun/2026-12-02/21-40-05/3", "train")
    assert sweep_job == "2026-12-02_21-40-05 #3 train"
    assert run_label(str(Path("/tmp/some_run")), "evaluate") == "some_run evaluate"
