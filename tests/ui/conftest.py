"""A real `jupyter lab` on a free loopback port, and headless Debian Chromium driving it."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, start_process, stop_process, wait_for_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    runtime_dir: Path
    proc: object
    settings_dir: Path | None = None

    def page_url(self, path: str) -> str:
        return f"{self.url}{path}?token={self.token}"

    def api(self, path: str, method: str = "GET", body: object = None) -> object:
        """One REST call with the token (which Jupyter accepts in place of an XSRF cookie)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    def write_settings(self, plugin: str, values: dict) -> None:
        """User settings for a lab plugin (``package:name``), read when the page loads."""
        package, name = plugin.split(":")
        path = self.settings_dir / package / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    def stop_clusters(self) -> None:
        """DELETE every cluster the server lists, so a test leaves nothing running."""
        for cluster in self.api("/labkit/api/clusters"):
            if cluster["origin"] != "kernel":
                self.api(f"/labkit/api/clusters/{cluster['id']}", method="DELETE")


@pytest.fixture
def lab(tmp_path) -> Iterator[Lab]:
    """JupyterLab with labkit installed as a user gets it (`pip install -e .`)."""
    labextension = Path(sys.prefix) / "share/jupyter/labextensions/labkit/package.json"
    if not labextension.exists():
        pytest.fail(f"the labkit lab extension is not installed ({labextension}); run make test")
    root, runtime, config = tmp_path / "work", tmp_path / "runtime", tmp_path / "config"
    settings = tmp_path / "settings"
    for folder in (root, runtime, config):
        folder.mkdir()
    # No "get notified about Jupyter news?" toast over the panel (and no fetch of it).
    notification = (
        settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    )
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(
        os.environ,
        JUPYTER_RUNTIME_DIR=str(runtime),
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
    )
    args = [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser"]
    args += ["--ip=127.0.0.1", f"--port={port}", "--port-retries=0", f"--notebook-dir={root}"]
    args += [f"--IdentityProvider.token={token}", "--LabApp.news_url=None"]
    args += ["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    # window.jupyterapp, so a test can wait for `restored` instead of guessing when it is.
    args += ["--LabApp.expose_app_in_browser=True"]
    log = tmp_path / "jupyter-lab.log"
    proc = start_process(args, log, env)
    server = Lab(f"http://127.0.0.1:{port}", token, root, runtime, proc, settings)
    try:
        wait_for_service(proc, log, lambda: server.api("/api/status"), "jupyter lab")
        yield server
    finally:
        stop_process(proc)


@pytest.fixture
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            yield page
        finally:
            browser.close()
