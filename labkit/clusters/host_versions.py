"""What a host runs: Python's and key packages' versions. Standard library only, and sent to
workers by value, so it also answers on a host where labkit itself is missing."""

from __future__ import annotations

import importlib.metadata
import platform

PACKAGES = ("cloudpickle", "numpy", "labkit", "ray", "dask", "distributed")


def versions() -> dict[str, str | None]:
    """``{"python": "3.11.9", "numpy": "2.3.1", ...}``; None for a package not installed."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
