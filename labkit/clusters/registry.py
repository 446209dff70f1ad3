"""The registry of named clusters, shared by a Jupyter server and the kernels it starts.

The server extension writes ``labkit-clusters.json`` in Jupyter's runtime directory (the one
``jupyter --runtime-dir`` prints, honouring ``$JUPYTER_RUNTIME_DIR``); ``labkit.connect(NAME)``
reads it. The file holds ``{"version": 1, "clusters": [entry, ...]}``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import RegistryError

REGISTRY_FILENAME = "labkit-clusters.json"
REGISTRY_VERSION = 1


@dataclass
class ClusterEntry:
    """One cluster known to a Jupyter server, managed (started by it) or registered."""

    id: str
    name: str
    backend: str
    address: str
    dashboard_url: str | None = None
    managed: bool = False
    pids: list[int] = field(default_factory=list)
    token_file: str | None = None
    workers: int | None = None
    tls: dict[str, str] | None = None  # a Dask client's ca_file, cert, key (mutual TLS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterEntry:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def registry_path() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir()) / REGISTRY_FILENAME


def read_registry(path: Path | None = None) -> list[ClusterEntry]:
    """All entries; an absent file means no named clusters."""
    path = path or registry_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the cluster registry {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("clusters"), list):
        raise RegistryError(f"the cluster registry {path} has no 'clusters' list")
    try:
        return [ClusterEntry.from_dict(item) for item in raw["clusters"]]
    except TypeError as exc:
        raise RegistryError(f"the cluster registry {path} has a malformed entry: {exc}") from exc


def write_registry(entries: list[ClusterEntry], path: Path | None = None) -> Path:
    """Replace the registry atomically, so a kernel never reads half a file."""
    path = path or registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": REGISTRY_VERSION, "clusters": [asdict(entry) for entry in entries]}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".labkit-clusters-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(payload, out, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def find_cluster(name: str, path: Path | None = None) -> ClusterEntry:
    """The entry whose name or id is ``name``; the error lists the names that exist."""
    path = path or registry_path()
    entries = read_registry(path)
    for entry in entries:
        if name in (entry.name, entry.id):
            return entry
    known = ", ".join(sorted(entry.name for entry in entries)) or "none"
    raise RegistryError(
        f"no cluster named {name!r} in {path} (known: {known}); start or register one in the "
        "JupyterLab sidebar, or pass an address such as ray://HOST:PORT or tcp://HOST:PORT"
    )
