"""The runs listing behind ``GET /labkit/api/runs``: ``labkit.runs.list_runs`` as JSON.

Runs are looked up where ``%labkit runs`` looks (``$LABKIT_RUNS_DIR``), else under the Jupyter
server's root folder; paths come back relative to that folder, as the file browser shows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labkit.runs.listing import RUNS_DIR_ENV, list_runs


def runs_for_server(root_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Frozen bundles, runs and batches, newest first, as plain JSON-ready dicts."""
    base = Path(os.environ.get(RUNS_DIR_ENV) or root_dir).expanduser().resolve()
    entries = []
    for entry in list_runs(base):
        item = dict(entry)
        path = Path(item["path"])
        if path.is_relative_to(base):
            item["path"] = str(path.relative_to(base)) or "."
        entries.append(item)
    return entries
