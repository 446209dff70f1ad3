"""Where a run's MLflow page is, and the MLflow UI Jupyter serves for a local store.

A run tracked on a server links to that server's page. A run in a local store links to
``mlflow/`` under the Jupyter server: jupyter-server-proxy starts ``mlflow server`` over the
store on first visit (entry point ``jupyter_serverproxy_servers``), behind Jupyter's own
authentication, so a Binder or a remote lab reaches it where only Jupyter's port is open.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from labkit.tracking.uri import DEFAULT_DB, is_server, runs_folder, sqlite_uri, tracking_uri

PROXY_PATH = "mlflow"  # under the Jupyter server's base URL


def reference(uri: str, experiment_id: str, run_id: str) -> dict[str, str]:
    """What a result file keeps of its MLflow run (``"mlflow"`` in result.json)."""
    return {"uri": uri, "experiment_id": experiment_id, "run_id": run_id}


def run_page(ref: Any) -> str | None:
    """The run's page: absolute on a tracking server, else relative to Jupyter's base URL."""
    if not isinstance(ref, dict) or not ref.get("run_id") or not ref.get("experiment_id"):
        return None
    fragment = f"#/experiments/{ref['experiment_id']}/runs/{ref['run_id']}"
    uri = str(ref.get("uri") or "")
    if is_server(uri):
        return f"{uri.rstrip('/')}/{fragment}"
    return f"{PROXY_PATH}/{fragment}"


def mlflow_proxy() -> dict[str, Any]:
    """jupyter-server-proxy's settings for the MLflow UI over this server's tracking store."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    uri = tracking_uri()
    # behind a tracking server the UI to open is the server's own; this one shows the local store
    store = sqlite_uri(runs_folder() / DEFAULT_DB) if is_server(uri) else uri
    return {
        "command": [
            mlflow,
            "server",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--static-prefix",
            "{base_url}" + PROXY_PATH,
            "--allowed-hosts",
            "*",  # only Jupyter's proxy reaches it, with the browser's Host header
        ],
        "absolute_url": True,
        "timeout": 90,
        "environment": {"MLFLOW_DISABLE_TELEMETRY": "true"},
        "launcher_entry": {"enabled": True, "title": "MLflow"},
    }
