"""A Jupyter server with the labkit extension, in-process, per test (pytest-jupyter)."""

from __future__ import annotations

import json

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (jp_fetch, jp_serverapp, ...)
from traitlets.config import Config


@pytest.fixture
def jp_server_config() -> Config:
    return Config(
        {
            "ServerApp": {
                "jpserver_extensions": {"labkit.server": True, "jupyter_server_proxy": True}
            },
            "ClusterManager": {"startup_timeout": 90.0},
        }
    )


@pytest.fixture
def manager(jp_serverapp):
    """The cluster manager of the server under test."""
    return jp_serverapp.web_app.settings["labkit_cluster_manager"]


@pytest.fixture
def api(jp_fetch):
    """``await api(METHOD, "clusters", body=...)`` -> (status, parsed JSON or None)."""

    async def call(method: str, *path: str, body=None, raw: bytes | None = None, **kwargs):
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if method in ("POST", "PATCH") and raw is None:
            raw = b""
        response = await jp_fetch(
            "labkit", "api", *path, method=method, body=raw, raise_error=False, **kwargs
        )
        text = response.body.decode()
        return response.code, json.loads(text) if text else None

    return call
