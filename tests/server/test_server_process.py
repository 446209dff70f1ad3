"""A real `jupyter server` process: managed clusters never outlive it, even when it is killed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import urllib.request

from labkit.server.processes import pid_alive
from tests.conftest import free_port, start_process, stop_process, wait_for, wait_for_service


def _call(url: str, token: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read() or b"null")


def test_killed_server_takes_its_clusters_along(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    args = [sys.executable, "-m", "jupyter", "server", "--allow-root", "--ip=127.0.0.1"]
    args += [f"--port={port}", f"--ServerApp.root_dir={tmp_path}"]
    args += [f"--IdentityProvider.token={token}"]
    log = tmp_path / "jupyter-server.log"
    server = start_process(args, log, env)
    base = f"http://127.0.0.1:{port}/labkit/api/clusters"
    pids: list[int] = []
    try:
        wait_for_service(server, log, lambda: _call(base, token) == [], "jupyter server")
        card = _call(base, token, "POST", {"backend": "dask", "workers": 1})
        wait_for(lambda: _call(f"{base}/{card['id']}", token)["status"] == "running", 90, "dask-1")
        registry = json.loads((tmp_path / "runtime" / "labkit-clusters.json").read_text())
        pids = registry["clusters"][0]["pids"]
        assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)

        os.kill(server.pid, signal.SIGKILL)  # no chance to clean up
        server.wait(10)
        wait_for(lambda: not any(pid_alive(pid) for pid in pids), 60, "orphaned cluster exit")
    finally:
        stop_process(server)
        for pid in pids:  # only if the assertion above failed
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
