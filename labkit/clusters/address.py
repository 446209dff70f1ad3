"""Turn what a user typed into a connection target: which backend, which kind, which address."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from labkit.errors import ConnectError

DEFAULT_BACKEND = "ray"
BACKEND_ENV = "LABKIT_BACKEND"

Kind = Literal["local", "ray-client", "ray-gcs", "dask-scheduler", "name", "slurm"]


@dataclass(frozen=True)
class Target:
    """Where to connect. ``kind == "name"`` still needs a registry lookup."""

    kind: Kind
    backend: str | None
    address: str | None = None
    slurm: Any = None  # kind "slurm": the SlurmOptions its jobs ask for


def default_backend(backend: str | None = None) -> str:
    """The backend to use for a local cluster: ``backend``, else ``$LABKIT_BACKEND``, else ray."""
    chosen = (backend or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND).strip().lower()
    from labkit.clusters.backends import known_backends

    if chosen not in known_backends():
        raise ConnectError(
            f"unknown backend {chosen!r}: choose one of {', '.join(known_backends())}",
            backend=chosen,
        )
    return chosen


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit())


def parse_address(address: str | None, backend: str | None = None) -> Target:
    """Classify ``address``; raises ConnectError when it contradicts ``backend``.

    ``None``/``"local"`` start a local cluster; ``ray://h:p`` is a Ray Client server;
    ``tcp://h:p`` a Dask scheduler; a bare ``h:p`` a Ray GCS (or a Dask scheduler with
    ``backend="dask"``); anything else is the name of a registered cluster.
    """
    if backend is not None:
        backend = default_backend(backend)
    text = (address or "").strip()
    if text in ("", "local"):
        return Target("local", default_backend(backend))
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "ray":
            _refuse_mismatch(text, backend, "ray", "a Ray Client address")
            _require_host_port(rest, text, "ray")
            return Target("ray-client", "ray", text)
        if scheme in ("tcp", "tls"):
            _refuse_mismatch(text, backend, "dask", "a Dask scheduler address")
            _require_host_port(rest, text, "dask")
            return Target("dask-scheduler", "dask", text)
        raise ConnectError(
            f"cannot connect to {text!r}: unknown scheme {scheme!r} "
            "(use ray://HOST:PORT, tcp://HOST:PORT, HOST:PORT with a backend, or a cluster name)",
            address=text,
            backend=backend,
        )
    if _is_host_port(text):
        if backend == "dask":
            return Target("dask-scheduler", "dask", f"tcp://{text}")
        return Target("ray-gcs", "ray", text)
    return Target("name", backend, text)


def _refuse_mismatch(address: str, backend: str | None, expected: str, what: str) -> None:
    if backend is not None and backend != expected:
        raise ConnectError(
            f"{address!r} is {what}, but backend={backend!r} was asked for; "
            f"drop backend= or use backend={expected!r}",
            address=address,
            backend=backend,
        )


def _require_host_port(rest: str, address: str, backend: str) -> None:
    if not _is_host_port(rest):
        raise ConnectError(
            f"cannot connect to {address!r}: expected HOST:PORT after the scheme",
            address=address,
            backend=backend,
        )


def on_loopback(host: str) -> bool:
    """Whether ``host`` is this machine's loopback, where nothing from another host reaches."""
    import ipaddress

    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """``"tcp://h:p"`` or ``"h:p"`` -> ``("h", p)``."""
    rest = address.partition("://")[2] or address
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
