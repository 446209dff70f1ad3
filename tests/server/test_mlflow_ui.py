"""The MLflow UI under Jupyter: jupyter-server-proxy starts `mlflow server` over the local
tracking store on first visit, behind Jupyter's auth; the runs listing links to run pages."""

from __future__ import annotations

import json

import psutil
import pytest

from labkit.server.runs import runs_for_server
from labkit.tracking import Tracker
from tests.conftest import wait_for


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    """The tracking store the UI serves. Torn down after the Jupyter server (fixtures end in
    reverse order), it stops the UI the proxy started, by PID, with every process under it:
    while the server runs, jupyter-server-proxy starts again a UI that exits non-zero."""
    db = tmp_path / "ui-store" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.setenv("LABKIT_TRACKING_URI", f"sqlite:///{db}")
    yield db
    stop_ui(db)


def stop_ui(db) -> None:
    """Stop the MLflow UI over ``db`` and every process under it, by PID."""
    for proc in _ui_processes(db):
        family = [*proc.children(recursive=True), proc]
        for member in family:
            member.terminate()
        psutil.wait_procs(family, timeout=30)
    wait_for(lambda: not _ui_processes(db), 30, "the MLflow UI to stop")


def _ui_processes(db) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "server" in cmdline and any(str(db) in part for part in cmdline):
            found.append(proc)
    return found


async def test_the_mlflow_ui_answers_under_jupyter(local_store, jp_fetch):
    tracker = Tracker.open()
    run = tracker.start_run("seen-in-the-ui", kind="train", params={"lr": 0.001})
    run.end()
    page = await jp_fetch("mlflow/", request_timeout=120)
    assert page.code == 200 and b"MLflow" in page.body
    reply = await jp_fetch(
        "mlflow", "ajax-api", "2.0", "mlflow", "runs", "get", params={"run_id": run.run_id}
    )
    assert json.loads(reply.body)["run"]["data"]["params"] == [{"key": "lr", "value": "0.001"}]
    assert _ui_processes(local_store)  # started by the proxy; local_store stops it


def test_listed_runs_and_batches_link_to_their_mlflow_page(tmp_path):
    folder = tmp_path / "b1"
    folder.mkdir()
    ref = {"uri": "sqlite:////x/mlflow.db", "experiment_id": "3", "run_id": "abc"}
    (folder / "results.json").write_text(
        json.dumps({"kind": "batch", "name": "b", "status": "done", "mlflow": ref})
    )
    served = tmp_path / "r1"
    served.mkdir()
    remote = {"uri": "http://mlflow.example:5000", "experiment_id": "7", "run_id": "def"}
    (served / "result.json").write_text(
        json.dumps({"kind": "run", "name": "r", "status": "ok", "mlflow": remote})
    )
    pages = {entry["kind"]: entry["mlflow_page"] for entry in runs_for_server(tmp_path)}
    assert pages == {
        "batch": "mlflow/#/experiments/3/runs/abc",  # under Jupyter's base URL
        "run": "http://mlflow.example:5000/#/experiments/7/runs/def",
    }
