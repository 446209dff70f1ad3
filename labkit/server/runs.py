"""The runs listing behind ``GET /labkit/api/runs``.

``labkit.runs`` (frozen bundles, batches) has no listing function yet; until it does, the
route answers an empty list so the sidebar's Runs section works end to end.
"""

from __future__ import annotations

import os
from typing import Any


def list_runs(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Frozen bundles and batches found under ``root``, newest first (none known yet)."""
    return []
