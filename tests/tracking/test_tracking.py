"""Every training, run and batch is an MLflow run: a local SQLite store, a real `mlflow
server`, and a server that cannot be reached (kept locally, then `labkit tracking sync`)."""

from __future__ import annotations

import json
import subprocess
import warnings

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labkit.errors import TrackingError, TrackingWarning
from labkit.runs import batch, freeze, run
from labkit.runs.bundle import sha256_file
from labkit.tracking import Tracker, tracking_uri
from labkit.vae import TrainConfig, train
from tests.conftest import BIN, free_port
from tests.runs.conftest import KERNELSPEC, write_notebook

TINY = TrainConfig(latent_dim=4, hidden=(32, 16), batch_size=32, epochs=2, kl_warmup=1)

CELLS = [
    "import os\n\nimport labkit",
    'scale = 2\nlabel = "a"',
    'if label == "boom":\n    raise ValueError("boom")\n'
    'labkit.record("total", 3.5 * scale)\n'
    'labkit.record("label", label)\n'
    'labkit.record("run_id", os.environ.get("MLFLOW_RUN_ID"))',
    'if scale == 2 and label == "a":  # the notebook logs into its own run\n'
    "    import mlflow\n\n"
    '    mlflow.log_metric("own", 7.0)',
]


@pytest.fixture
def tracked_bundle(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    notebook = write_notebook(folder / "study.ipynb", CELLS, tags={1: ["parameters"]})
    assert KERNELSPEC["name"] == "python3"
    return freeze(notebook, name="study", out=tmp_path / "bundles")


def test_the_tracking_uri_follows_the_rule_and_unknown_schemes_are_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("LABKIT_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LABKIT_RUNS_DIR", str(tmp_path))
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    monkeypatch.setenv("LABKIT_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    assert tracking_uri().endswith("other.db")
    monkeypatch.setenv("LABKIT_TRACKING", "off")
    assert Tracker.open() is None
    monkeypatch.setenv("LABKIT_TRACKING", "on")
    monkeypatch.setenv("LABKIT_TRACKING_URI", "ftp://example.org/runs")
    with pytest.raises(
        TrackingError, match="'ftp'.*ftp://example.org/runs|ftp://example.org/runs.*'ftp'"
    ):
        tracking_uri()


def test_a_bad_tracking_uri_stops_training_before_any_file_is_written(
    rest_spectra, tmp_path, monkeypatch
):
    monkeypatch.setenv("LABKIT_TRACKING_URI", "mlfow://typo")
    with pytest.raises(TrackingError, match="mlfow://typo"):
        train(rest_spectra, TINY, cluster=False, checkpoint_dir=tmp_path / "ck", progress=False)
    assert not (tmp_path / "ck").exists()


def test_training_is_one_run_and_a_resume_continues_it(rest_spectra, tmp_path, local_tracking):
    result = train(
        rest_spectra, TINY, cluster=False, checkpoint_dir=tmp_path / "ck", progress=False
    )
    client = MlflowClient(local_tracking)
    tracked = client.get_run(result.mlflow_run_id)
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["labkit.kind"] == "train"
    assert tracked.data.tags["labkit.backend"] == "in-process"
    n, pixels = rest_spectra.flux.shape
    assert tracked.data.tags["labkit.data.in_memory"] == f"{n} x {pixels}"
    assert tracked.data.params["latent_dim"] == "4"
    assert tracked.data.params["epochs"] == "2"
    losses = client.get_metric_history(result.mlflow_run_id, "loss")
    assert [(m.step, m.value) for m in losses] == [
        (r["epoch"], pytest.approx(r["loss"])) for r in result.history
    ]
    best = min(r["val_loss"] for r in result.history)
    assert tracked.data.metrics["best_val_loss"] == pytest.approx(best)
    assert [a.path for a in client.list_artifacts(result.mlflow_run_id, "model")] == [
        "model/model.pt"
    ]

    longer = TrainConfig(**{**TINY.to_dict(), "epochs": 4})
    resumed = train(
        rest_spectra,
        longer,
        cluster=False,
        checkpoint_dir=tmp_path / "ck",
        resume=True,
        progress=False,
    )
    assert resumed.mlflow_run_id == result.mlflow_run_id
    steps = [m.step for m in client.get_metric_history(result.mlflow_run_id, "loss")]
    assert steps == [1, 2, 3, 4]
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"


def test_a_batch_is_a_parent_run_with_a_child_per_grid_point(
    tracked_bundle, dask_scheduler, tmp_path, local_tracking
):
    grid = {"scale": [1, 2], "label": ["a", "boom"]}
    result = batch(
        tracked_bundle, grid, on=dask_scheduler.address, out=tmp_path / "b", progress=False
    )
    client = MlflowClient(local_tracking)
    saved = json.loads((result.path / "results.json").read_text())
    parent = client.get_run(saved["mlflow"]["run_id"])
    assert parent.data.tags["labkit.kind"] == "batch"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["runs_failed"] == 2
    digest = sha256_file(tracked_bundle / "notebook.ipynb")
    for entry in saved["runs"]:
        child = client.get_run(entry["mlflow_run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["labkit.bundle_sha256"] == digest
        assert child.data.params["scale"] == str(entry["parameters"]["scale"])
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert len(artifacts) == 1 and artifacts[0].endswith(".ipynb")
        if entry["parameters"]["label"] == "boom":
            assert child.info.status == "FAILED"
            assert "boom" in child.data.tags["labkit.error"]
        else:
            assert child.info.status == "FINISHED"
            # the run id reached the notebook, and its records are the run's metrics
            assert entry["records"]["run_id"] == child.info.run_id
            assert child.data.metrics["total"] == 3.5 * entry["parameters"]["scale"]
    own = [e for e in saved["runs"] if e["parameters"] == {"scale": 2, "label": "a"}][0]
    assert client.get_run(own["mlflow_run_id"]).data.metrics["own"] == 7.0


def test_labkit_run_is_one_run(tracked_bundle, tmp_path, local_tracking):
    result = run(tracked_bundle, {"scale": 3}, out=tmp_path / "r", progress=False)
    saved = json.loads((tmp_path / "r" / "result.json").read_text())
    assert saved["mlflow_run_id"] == result.mlflow_run_id == result.records["run_id"]
    tracked = MlflowClient(local_tracking).get_run(result.mlflow_run_id)
    assert tracked.data.tags["labkit.kind"] == "run"
    assert tracked.data.metrics["total"] == 10.5
    assert "mlflow.parentRunId" not in tracked.data.tags


def test_a_real_tracking_server_receives_training(
    rest_spectra, tmp_path, mlflow_server, monkeypatch
):
    monkeypatch.setenv("LABKIT_TRACKING_URI", mlflow_server.uri)
    result = train(
        rest_spectra, TINY, cluster=False, checkpoint_dir=tmp_path / "ck", progress=False
    )
    client = MlflowClient(mlflow_server.uri)
    losses = client.get_metric_history(result.mlflow_run_id, "loss")
    assert [m.step for m in losses] == [1, 2]
    assert [a.path for a in client.list_artifacts(result.mlflow_run_id, "model")] == [
        "model/model.pt"
    ]
    stored = list((mlflow_server.folder / "artifacts").rglob("model.pt"))
    assert len(stored) == 1  # the server's own artifact folder holds it


def test_an_unreachable_server_keeps_the_run_here_until_sync_sends_it(
    rest_spectra, tmp_path, mlflow_server, monkeypatch
):
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("LABKIT_TRACKING_URI", down)
    monkeypatch.setenv("LABKIT_RUNS_DIR", str(tmp_path))
    with pytest.warns(TrackingWarning, match=down):
        result = train(
            rest_spectra, TINY, cluster=False, checkpoint_dir=tmp_path / "ck", progress=False
        )
    assert len(result.history) == 2 and (tmp_path / "ck" / "model.pt").is_file()
    kept = MlflowClient(f"sqlite:///{tmp_path / 'mlflow-unsent.db'}")
    assert kept.get_run(result.mlflow_run_id).data.tags["labkit.sync_to"] == down

    def sync() -> str:
        done = subprocess.run(
            [str(BIN / "labkit"), "tracking", "sync", str(tmp_path), "--to", mlflow_server.uri],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = sync()
    assert first.startswith("sent 1 run(s)")
    new_id = kept.get_run(result.mlflow_run_id).data.tags["labkit.synced_as"]
    assert new_id in first
    server = MlflowClient(mlflow_server.uri)
    sent = server.get_run(new_id)
    assert sent.info.status == "FINISHED"
    history = server.get_metric_history(new_id, "loss")
    assert np.allclose([m.value for m in history], [r["loss"] for r in result.history])
    assert [a.path for a in server.list_artifacts(new_id, "model")] == ["model/model.pt"]
    assert sync().startswith("sent 0 run(s)")  # nothing twice


def test_tracking_off_leaves_no_store(rest_spectra, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_TRACKING", "off")
    monkeypatch.setenv("LABKIT_TRACKING_URI", f"sqlite:///{tmp_path / 'never.db'}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackingWarning)
        result = train(
            rest_spectra, TINY, cluster=False, checkpoint_dir=tmp_path / "ck", progress=False
        )
    assert result.mlflow_run_id is None
    assert not (tmp_path / "never.db").exists()
