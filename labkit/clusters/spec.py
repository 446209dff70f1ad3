"""Which cluster a ``cluster=`` (or ``on=``) argument means: one rule for every step.

``ClusterSpec`` values and what they mean:

- ``None``: the active cluster, if any; otherwise none (run here), or, for a step that needs
  a cluster (``required=True``, e.g. a batch), a local cluster connected for the call.
- ``True``: a cluster: the active one, else a local one connected for the call.
- ``False`` or ``"in-process"``: no cluster; run in this process.
- ``"local"``, or a backend name (``"ray"``, ``"dask"``, any registered one): a local cluster
  of that backend (``"local"``: the default backend): the active cluster when it is local and
  of that backend, else one connected for the call.
- any other string: an address or the name of a registered cluster: the active cluster when
  it is at that address, else one connected for the call.
- a ``Cluster``: that cluster (it must be open).

A cluster connected for the call becomes the active one, as ``labkit.connect`` makes it, and
the caller owns it: ``using_cluster`` closes it when the step ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeAlias

from labkit.clusters.address import parse_address
from labkit.clusters.backends import known_backends
from labkit.clusters.base import Cluster
from labkit.clusters.registry import find_cluster
from labkit.clusters.session import active_or_none, connect
from labkit.errors import ClusterSpecError, NotConnectedError, ParameterError, RegistryError

ClusterSpec: TypeAlias = Cluster | str | bool | None

IN_PROCESS = "in-process"
LOCAL = "local"


def choose_cluster(spec: ClusterSpec, *, required: bool = False) -> tuple[Cluster | None, bool]:
    """(the cluster ``spec`` means or None for in-process, whether this call connected it).

    ``required``: the step cannot run in-process, so ``None`` falls back to a local cluster
    and ``False``/``"in-process"`` are refused.
    """
    if isinstance(spec, Cluster):
        if spec.closed:
            raise NotConnectedError(
                f"the {spec.backend} cluster at {spec.address} was closed; connect again first"
            )
        return spec, False
    if spec is False or spec == IN_PROCESS:
        if required:
            raise ParameterError("this step runs on a cluster; it cannot run in-process")
        return None, False
    active = active_or_none()
    if spec is None or spec is True:
        if active is not None:
            return active, False
        if spec is None and not required:
            return None, False
        return connect(), True
    if not isinstance(spec, str):
        raise ParameterError(f"{_SHAPES}, got {type(spec).__name__}")
    if spec == LOCAL or spec in known_backends():
        backend = None if spec == LOCAL else spec
        if active is not None and active.local and backend in (None, active.backend):
            return active, False
        return connect(backend=backend), True
    if active is not None and active.address == spec:
        return active, False
    _check_name(spec)
    return connect(spec), True


@contextmanager
def using_cluster(spec: ClusterSpec, *, required: bool = False) -> Iterator[Cluster | None]:
    """``choose_cluster`` for the length of a ``with`` block; closes a cluster it connected."""
    cluster, owned = choose_cluster(spec, required=required)
    try:
        yield cluster
    finally:
        if owned:
            cluster.close()


_SHAPES = (
    "cluster must be a labkit Cluster, None, False, 'in-process', 'local', a backend name, "
    "an address or the name of a registered cluster"
)


def _check_name(spec: str) -> None:
    """A string that is no address must name a registered cluster; say what else it could be."""
    if parse_address(spec).kind != "name":
        return
    try:
        find_cluster(spec)
    except RegistryError as exc:
        raise ClusterSpecError(f"{_SHAPES}; {exc}") from None
