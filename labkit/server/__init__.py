"""Jupyter server extension: REST routes and the cluster manager behind the sidebar panel."""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from labkit.server.app import LabkitServerApp

    return [{"module": "labkit.server", "app": LabkitServerApp}]
