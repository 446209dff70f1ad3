"""The records ``/labkit/api/clusters`` and ``/labkit/api/backends`` answer with, defined once.

The sidebar's ``ICluster`` and ``IBackend`` (extension/src/api.ts) mirror them;
tests/test_api_types.py checks that the two sides agree field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labkit.clusters.slurm import JobState

Backend = str  # a registered backend name (labkit.clusters.backends): "ray", "dask", ...
Origin = Literal["managed", "registered", "kernel"]
Where = Literal["local", "slurm"]  # where a managed cluster's workers run
Phase = Literal["starting", "running", "scaling", "stopping"]  # of a managed cluster
# a managed cluster shows its phase or an error; one reached by address can be unreachable
ClusterStatus = Literal["starting", "running", "scaling", "stopping", "error", "unreachable"]


@dataclass
class BackendDescription:
    """A backend the server can start clusters of, as the sidebar names it."""

    name: Backend
    label: str  # "Dask"
    worker_unit: str  # what a card's worker count counts: "workers", "nodes"
    scale_label: str  # the Scale field's label
    scale_hint: str  # its tooltip
    on: Where = "local"
    profiles: list[str] = field(default_factory=list)  # SLURM profiles it can start with


@dataclass
class ClusterDescription:
    """One cluster as the REST API and the sidebar see it; live figures are None if unknown."""

    id: str
    name: str
    backend: Backend
    address: str
    status: ClusterStatus
    workers: int | None
    cpus: int | None
    gpus: int | None
    memory_bytes: int | None
    dashboard_url: str | None
    managed: bool
    origin: Origin
    requested_workers: int | None
    error: str | None
    connect: str  # the cell that attaches a kernel, e.g. "%labkit connect ray-1"
    join: str | None = None  # the command another host runs to join it (off loopback only)
    jobs: list[JobState] | None = None  # its SLURM jobs, pending ones with SLURM's reason
