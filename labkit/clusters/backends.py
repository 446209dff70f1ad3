"""Cluster backends by name: one record per backend, naming its class on each side.

A backend is a kernel-side ``Cluster`` subclass (``labkit.connect``) and, when the Jupyter
server can start clusters of it, a server-side ``Launcher``. Both are named by import string
("module:Class") and imported on first use, so ``import labkit`` stays light. A new backend
is one module (or one per side) plus one ``register_backend`` line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labkit.clusters.base import Cluster


@dataclass(frozen=True)
class Backend:
    """Where one backend's classes live."""

    name: str
    cluster: str  # "module:Class" of its Cluster
    launcher: str | None = None  # "module:Class" of its server Launcher; None: not managed
    slurm_launcher: str | None = None  # the server Launcher whose workers are SLURM jobs


BACKENDS: dict[str, Backend] = {}


def register_backend(
    name: str, *, cluster: str, launcher: str | None = None, slurm_launcher: str | None = None
) -> Backend:
    """Make backend ``name`` known to ``labkit.connect`` and (with ``launcher``) the server;
    ``slurm_launcher``: the server can also start it with its workers as SLURM jobs."""
    BACKENDS[name] = Backend(name, cluster, launcher, slurm_launcher)
    return BACKENDS[name]


register_backend(
    "ray",
    cluster="labkit.clusters.ray:RayCluster",
    launcher="labkit.server.launchers.ray:RayLauncher",
    slurm_launcher="labkit.server.launchers.ray_slurm:RaySlurmLauncher",
)
register_backend(
    "dask",
    cluster="labkit.clusters.dask:DaskCluster",
    launcher="labkit.server.launchers.dask:DaskLauncher",
    slurm_launcher="labkit.server.launchers.dask_slurm:DaskSlurmLauncher",
)


def known_backends() -> list[str]:
    return list(BACKENDS)


def backend_record(name: str) -> Backend:
    return BACKENDS[name]


def backend_class(name: str) -> type[Cluster]:
    return load(BACKENDS[name].cluster)


def load(target: str) -> Any:
    """The object an import string ("module:attribute") names."""
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)
