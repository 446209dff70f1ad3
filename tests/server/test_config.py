"""The extension is configured with traitlets, as jupyter_scheduler's managers are."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from labkit.server.manager import ClusterManager


class QuietManager(ClusterManager):
    """A manager subclass, as a deployment would configure one."""


@pytest.fixture
def jp_server_config(jp_server_config):
    jp_server_config["LabkitServerApp"] = Config(cluster_manager_class=QuietManager)
    jp_server_config["ClusterManager"] = Config(max_workers=3, proxy_dashboards=False)
    return jp_server_config


async def test_manager_class_and_settings_come_from_config(api, manager):
    assert type(manager) is QuietManager
    assert manager.bind_host == "127.0.0.1"  # loopback unless configured otherwise
    assert manager.max_workers == 3
    status, reply = await api("POST", "clusters", body={"backend": "dask", "workers": 4})
    assert status == 400 and "between 1 and 3" in reply["message"]


def test_server_extension_is_enabled_by_installing_the_package():
    import json
    import subprocess
    import sys
    from pathlib import Path

    config = Path(sys.prefix) / "etc/jupyter/jupyter_server_config.d/labkit.json"
    assert json.loads(config.read_text())["ServerApp"]["jpserver_extensions"]["labkit.server"]
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter", "server", "extension", "list"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in (listing.stdout + listing.stderr).splitlines() if "labkit.server" in x)
    assert "enabled" in line
