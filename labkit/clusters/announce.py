"""Local clusters that kernels start themselves, announced so the sidebar can list them.

A kernel that starts an embedded cluster (``labkit.connect()``) drops one small JSON file in
``labkit-kernel-clusters/`` under Jupyter's runtime directory and removes it on close; the
server lists the files whose kernel process still lives. Announcing is best effort: a
read-only runtime directory never breaks ``connect``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.clusters.base import Cluster

ANNOUNCE_DIRNAME = "labkit-kernel-clusters"


def announce_dir() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / ANNOUNCE_DIRNAME


def _path(cluster: Cluster) -> Path:
    return announce_dir() / f"{os.getpid()}-{id(cluster):x}.json"


def announce(cluster: Cluster) -> None:
    """Record (or refresh) a local cluster of this process."""
    if not cluster.local:
        return
    entry = {
        "pid": os.getpid(),
        "backend": cluster.backend,
        "address": cluster.address,
        "dashboard_url": cluster.dashboard_url,
        "started": time.time(),
    }
    with contextlib.suppress(OSError):
        path = _path(cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)


def withdraw(cluster: Cluster) -> None:
    with contextlib.suppress(OSError):
        _path(cluster).unlink(missing_ok=True)


def announced(directory: Path | None = None) -> list[dict[str, Any]]:
    """Announcements whose process still runs; files of dead processes are removed."""
    directory = directory or announce_dir()
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
            pid = int(entry["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid_alive(pid):
            entry["key"] = path.stem
            found.append(entry)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return found


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True
