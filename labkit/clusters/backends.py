"""Cluster backends by name. A new backend is one module plus one line here."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labkit.clusters.base import Cluster

# name -> "module:Class", imported on first use so `import labkit` stays light.
BACKENDS: dict[str, str] = {
    "ray": "labkit.clusters.ray:RayCluster",
    "dask": "labkit.clusters.dask:DaskCluster",
}


def known_backends() -> list[str]:
    return list(BACKENDS)


def backend_class(name: str) -> type[Cluster]:
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(import_module(module), attr)
