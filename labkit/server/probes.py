"""Ask a cluster how it is doing, cheaply and without attaching to it.

Dask: one ``identity`` call to the scheduler over Dask's own comm (no Client).
Ray: the GCS's node table over gRPC (in a worker thread), with the bearer token Ray's token
auth wants; the server never becomes a Ray driver. A Ray Client server (``ray://``) answers a
ping only.
Every probe is bounded by ``timeout``; failure comes back as ``Health.error``, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkit.clusters.address import split_host_port
from labkit.clusters.credentials import NONE, Credentials
from labkit.errors import LabkitError

if TYPE_CHECKING:
    from labkit.server.launchers.base import Launcher


@dataclass
class Health:
    """What a cluster said about itself; ``error`` set when it could not be asked."""

    reachable: bool
    workers: int | None = None
    cpus: int | None = None
    gpus: int | None = None
    memory_bytes: int | None = None
    dashboard: str | None = None  # "host:port" as the cluster reports it
    error: str | None = None


async def probe(
    backend: str,
    address: str,
    timeout: float,
    credentials: Credentials = NONE,
) -> Health:
    """Health of the cluster at ``address``, asked by the registered launcher of ``backend``."""
    from labkit.server.launchers import launcher_class

    return await probe_with(launcher_class(backend), address, timeout, credentials)


async def probe_with(
    launcher: type[Launcher],
    address: str,
    timeout: float,
    credentials: Credentials = NONE,
) -> Health:
    """Health of the cluster at ``address`` as ``launcher.ask`` reports it; never raises for an
    unreachable one."""
    try:
        refused = await _listening(address, timeout)
        if refused:
            return Health(False, error=refused)
        ask = launcher.ask(address, timeout, credentials)
        return await asyncio.wait_for(ask, timeout + 1)
    except TimeoutError:
        return Health(False, error=f"no answer from {address} within {timeout:g} s")
    except LabkitError as exc:
        return Health(False, error=str(exc))
    except Exception as exc:  # any comm or gRPC failure means: not reachable now
        return Health(False, error=f"cannot reach {address}: {type(exc).__name__}: {exc}")


async def _listening(address: str, timeout: float) -> str | None:
    """Why nothing can answer at ``address`` (one TCP connect), or None when something listens.

    Without this, a refused connection costs the client libraries' full retry timeout.
    """
    host, port = split_host_port(address)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return f"no answer from {address} within {timeout:g} s"
    except ConnectionRefusedError:
        return f"nothing listens at {address} (connection refused)"
    except OSError as exc:
        return f"cannot reach {address}: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None
