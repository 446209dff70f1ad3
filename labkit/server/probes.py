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

from labkit.clusters.address import split_host_port
from labkit.errors import LabkitError


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
    backend: str, address: str, timeout: float, token_file: str | None = None
) -> Health:
    """Health of the cluster at ``address``; never raises for an unreachable one."""
    try:
        refused = await _listening(address, timeout)
        if refused:
            return Health(False, error=refused)
        if backend == "dask":
            coroutine = _probe_dask(address, timeout)
        elif address.startswith("ray://"):
            coroutine = _probe_ray_client(address, timeout, token_file)
        else:
            coroutine = _probe_ray_gcs(address, timeout, token_file)
        return await asyncio.wait_for(coroutine, timeout + 1)
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


async def _probe_dask(address: str, timeout: float) -> Health:
    from distributed.core import rpc

    scheduler = rpc(address, timeout=timeout)
    try:
        identity = await scheduler.identity()
    finally:
        await scheduler.close_rpc()
    workers = identity.get("workers", {}).values()
    port = identity.get("services", {}).get("dashboard")
    host = split_host_port(address)[0]
    return Health(
        True,
        workers=len(workers),
        cpus=sum(int(w.get("nthreads", 0)) for w in workers),
        gpus=sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers),
        memory_bytes=sum(int(w.get("memory_limit") or 0) for w in workers),
        dashboard=f"{host}:{port}" if port else None,
    )


def _metadata(token_file: str | None) -> list[tuple[str, str]]:
    from labkit.clusters.ray_auth import find_token

    token = find_token(token_file)
    return [("authorization", f"Bearer {token.value}")] if token else []


def _rpc_error(exc, address: str) -> Health:
    import grpc

    code = exc.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        message = (
            f"the Ray cluster at {address} refused the token (or wants one): register it "
            "with the cluster's token file"
        )
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        message = f"cannot reach the Ray cluster at {address}: nothing answered"
    else:
        message = f"the Ray cluster at {address} answered with an error: {exc.details()}"
    return Health(False, error=message)


async def _probe_ray_gcs(address: str, timeout: float, token_file: str | None) -> Health:
    return await asyncio.to_thread(_ask_ray_gcs, address, timeout, _metadata(token_file))


def _ask_ray_gcs(address: str, timeout: float, metadata: list[tuple[str, str]]) -> Health:
    # Blocking gRPC in a worker thread: grpc.aio would bind to one event loop for good.
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            nodes = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
                gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=timeout
            )
            dashboard = gcs_service_pb2_grpc.InternalKVGcsServiceStub(channel).InternalKVGet(
                gcs_service_pb2.InternalKVGetRequest(key=b"dashboard", namespace=b"dashboard"),
                metadata=metadata,
                timeout=timeout,
            )
        except grpc.RpcError as exc:
            return _rpc_error(exc, address)
    alive = [
        node.resources_total
        for node in nodes.node_info_list
        if node.state == gcs_pb2.GcsNodeInfo.GcsNodeState.ALIVE
    ]
    shown = dashboard.value.decode() if dashboard.value else ""
    return Health(
        True,
        workers=len(alive),
        cpus=int(sum(r.get("CPU", 0) for r in alive)),
        gpus=int(sum(r.get("GPU", 0) for r in alive)),
        memory_bytes=int(sum(r.get("memory", 0) for r in alive)),
        dashboard=shown.split("://")[-1] or None,
    )


async def _probe_ray_client(address: str, timeout: float, token_file: str | None) -> Health:
    return await asyncio.to_thread(_ask_ray_client, address, timeout, _metadata(token_file))


def _ask_ray_client(address: str, timeout: float, metadata: list[tuple[str, str]]) -> Health:
    import grpc
    from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

    request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
    with grpc.insecure_channel(address.removeprefix("ray://")) as channel:
        try:
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(
                request, metadata=metadata, timeout=timeout
            )
        except grpc.RpcError as exc:
            return _rpc_error(exc, address)
    return Health(True)
