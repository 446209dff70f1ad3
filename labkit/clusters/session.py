"""The cluster this Python process is attached to: ``labkit.connect`` and ``labkit.current``."""

from __future__ import annotations

import atexit
import os
from typing import Any

from labkit.checks import whole
from labkit.clusters.address import Target, default_backend, parse_address
from labkit.clusters.announce import announce
from labkit.clusters.backends import backend_class
from labkit.clusters.base import Cluster
from labkit.clusters.credentials import Credentials
from labkit.clusters.registry import ClusterEntry, find_cluster
from labkit.errors import (
    ConnectError,
    NotConnectedError,
    ParameterError,
    UnsupportedOperationError,
    VersionMismatchError,
)

DEFAULT_TIMEOUT = 30.0

_active: Cluster | None = None


def resolve(address: str | None, backend: str | None = None) -> tuple[Target, ClusterEntry | None]:
    """The target for ``address``, and the registry entry when ``address`` is a name."""
    target = parse_address(address, backend)
    if target.kind != "name":
        return target, None
    entry = find_cluster(target.address)
    resolved = parse_address(entry.address, entry.backend)
    if backend is not None and resolved.backend != backend:
        raise ConnectError(
            f"cluster {entry.name!r} is a {resolved.backend} cluster, but backend={backend!r} "
            "was asked for",
            address=entry.address,
            backend=backend,
        )
    return resolved, entry


def _target(
    address: str | None, backend: str | None, on: str | None, slurm: dict[str, Any]
) -> tuple[Target, ClusterEntry | None]:
    if on is None:
        if slurm:
            raise ParameterError(
                f"{', '.join(sorted(slurm))}: options of a SLURM cluster; add on='slurm'"
            )
        return resolve(address, backend)
    if on != "slurm":
        raise ParameterError(f"on={on!r}: the only scheduler labkit submits to is 'slurm'")
    if address not in (None, "", "local"):
        raise ParameterError(f"on='slurm' starts a new cluster; it takes no address ({address!r})")
    from labkit.clusters.slurm import SlurmOptions

    chosen = default_backend(backend)
    return Target("slurm", chosen, None, SlurmOptions.from_kwargs(slurm)), None


def connect(
    address: str | None = None,
    *,
    backend: str | None = None,
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    token_file: str | os.PathLike | None = None,
    security: Any = None,
    on: str | None = None,
    **slurm: Any,
) -> Cluster:
    """Attach this process to a cluster and make it the active one.

    ``address``: ``None``/``"local"`` (an embedded local cluster), ``ray://HOST:PORT``,
    ``HOST:PORT`` (Ray GCS, or Dask with ``backend="dask"``), ``tcp://HOST:PORT``, or the
    name of a cluster the JupyterLab sidebar started or registered. The previous connection
    is closed only once the new address has answered, so a typo loses nothing.

    ``tls://HOST:PORT``: a Dask scheduler with mutual TLS; the client's certificates come from
    ``security`` (a ``distributed.Security``, e.g. ``labkit.clusters.dask_auth.dask_security(ca,
    cert, key)``) or else from Dask's configuration (``distributed.comm.tls.*``, also as
    ``DASK_DISTRIBUTED__COMM__TLS__...`` environment variables). ``token_file``: Ray's token.

    ``on="slurm"``: a new cluster whose workers are SLURM jobs, asked for with the options of
    ``labkit.clusters.slurm.SlurmOptions`` (``jobs=2, cores=1, memory="2GiB",
    walltime="00:30:00", partition=..., account=..., job_extra=[...]``).
    """
    global _active
    _check_number("workers", workers, allow_none=True)
    _check_number("timeout", timeout)
    target, entry = _target(address, backend, on, slurm)
    if token_file is None and entry is not None:
        token_file = entry.token_file
    credentials = Credentials(
        token_file=os.fspath(token_file) if token_file is not None else None,
        tls=entry.tls if entry is not None and security is None else None,
        security=security,
    )
    cluster = backend_class(target.backend).connect(
        target,
        workers=workers,
        timeout=float(timeout),
        credentials=credentials,
        release_previous=disconnect,
    )
    if not cluster.local:
        _check_versions(cluster)
    if entry is not None and entry.dashboard_url:
        # the server's proxied link works where only the Jupyter port is reachable (Binder)
        cluster.dashboard_url = entry.dashboard_url
    _active = cluster
    announce(cluster)  # a local cluster shows in the JupyterLab sidebar
    return cluster


def _check_versions(cluster: Cluster) -> None:
    """Compare every host's versions with this process's; a breaking drift closes the cluster."""
    from labkit.clusters import versions

    try:
        cluster.versions = cluster.run_on_each_host(versions.host_versions.versions)
        versions.check(cluster.backend, cluster.versions, cluster.address)
    except UnsupportedOperationError:
        return
    except VersionMismatchError:
        cluster.close()
        raise


def current() -> Cluster:
    """The active cluster; raises NotConnectedError with what to do when there is none."""
    if _active is None or _active.closed:
        raise NotConnectedError(
            "no cluster is attached; connect first: labkit.connect() or %labkit connect"
        )
    return _active


def active_or_none() -> Cluster | None:
    """The active cluster, or None: for steps that run in-process when nothing is attached."""
    return _active if _active is not None and not _active.closed else None


def disconnect() -> None:
    """Close the active cluster, if any."""
    global _active
    cluster, _active = _active, None
    if cluster is not None:
        cluster.close()


def _check_number(name: str, value: object, *, allow_none: bool = False) -> None:
    from labkit.errors import ParameterError

    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ParameterError(f"{name} must be a positive number, got {value!r}")
    if name == "workers":
        whole("workers", value)


atexit.register(disconnect)
