"""A real `mlflow server` on loopback (its own SQLite backend and artifact folder), and a
fresh local tracking store per test."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, free_port, start_process, stop_process, wait_for_service
from tests.vae.conftest import rest_spectra  # noqa: F401 - the VAE tests' spectra, shared


@dataclass
class MlflowServer:
    uri: str
    folder: Path


def _healthy(uri: str) -> bool:
    with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
        return reply.read().strip() == b"OK"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    folder = tmp_path_factory.mktemp("mlflow-server")
    uri = f"http://127.0.0.1:{free_port()}"
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        uri.rsplit(":", 1)[1],
        "--workers",
        "1",
    ]
    log = folder / "server.log"
    proc = start_process(command, log, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        wait_for_service(proc, log, lambda: _healthy(uri), "mlflow server")
        yield MlflowServer(uri, folder)
    finally:
        stop_process(proc)


@pytest.fixture
def local_tracking(tmp_path, monkeypatch) -> str:
    """This test's own SQLite tracking store; its URI."""
    uri = f"sqlite:///{tmp_path / 'tracking' / 'mlflow.db'}"
    (tmp_path / "tracking").mkdir()
    monkeypatch.setenv("LABKIT_TRACKING_URI", uri)
    return uri
