"""Ray on the server: ``ray start --head`` processes, and the GCS asked over gRPC.

The probe reads the GCS's node table (in a worker thread) with the bearer token Ray's token
auth wants, so the server never becomes a Ray driver; a Ray Client server (``ray://``) answers
a ping only.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

from labkit.clusters.credentials import NONE, Credentials
from labkit.clusters.ports import free_ports
from labkit.clusters.ray import new_ray_temp_dir
from labkit.clusters.ray_auth import default_token_path, find_token
from labkit.clusters.ray_processes import ray_process_env
from labkit.log import logger
from labkit.server.launchers.base import Launcher
from labkit.server.probes import Health
from labkit.server.processes import ManagedProcess, executable


class RayLauncher(Launcher):
    """``ray start --head --block`` on ``host``: one node with ``workers`` CPU slots.

    Ray runs multi-node only off loopback, so resizing restarts the head with the new number of
    CPU slots (objects and actors in it are lost). Token authentication is on, with the token
    where Ray keeps it (``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; created if absent).
    """

    backend = "ray"
    label = "Ray"
    worker_unit = "nodes"
    scale_label = "CPU slots"
    scale_hint = "A local Ray cluster is one node: scaling restarts it with this many CPU slots"
    PORT_FLAGS = (
        "--port",
        "--ray-client-server-port",
        "--dashboard-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
        "--node-manager-port",
        "--object-manager-port",
    )

    @classmethod
    async def ask(
        cls,
        address: str,
        timeout: float,
        credentials: Credentials = NONE,
    ) -> Health:
        metadata = _metadata(credentials.token_file)
        if address.startswith("ray://"):
            return await asyncio.to_thread(_ask_ray_client, address, timeout, metadata)
        return await asyncio.to_thread(_ask_ray_gcs, address, timeout, metadata)

    @classmethod
    def ready(cls, health: Health, wanted: int) -> bool:
        return (health.cpus or 0) >= wanted  # a local Ray cluster is one node of CPU slots

    @classmethod
    def dashboard_token(cls, token_file: str | None) -> str | None:
        found = find_token(token_file)
        return found.value if found else None

    def __init__(self, workdir: Path, host: str):
        super().__init__(workdir, host)
        self.head: ManagedProcess | None = None
        self.generation = 0
        # Outside ``workdir``, whose configurable root may be too long for Ray's socket paths.
        self.temp_dir: str | None = None

    def _token_env(self) -> dict[str, str]:
        env = ray_process_env()
        token = find_token()
        if token is None:
            path = default_token_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
            token = find_token()
        assert token is not None
        env["RAY_AUTH_MODE"] = "token"
        if token.path is not None:
            env.pop("RAY_AUTH_TOKEN", None)
            env["RAY_AUTH_TOKEN_PATH"] = str(token.path.resolve())
            self.token_file = str(token.path.resolve())
        return env

    def start(self, workers: int) -> None:
        self.generation += 1
        ports = dict(zip(self.PORT_FLAGS, free_ports(len(self.PORT_FLAGS), self.host), strict=True))
        env = self._token_env()  # token auth on, loopback or not
        if self.takes_remote_nodes:
            # "0" (inherited from a process that ran a loopback cluster) refuses other nodes
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            # Without this Ray rewrites 127.0.0.1 to the machine's routable address.
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        self.temp_dir = new_ray_temp_dir()
        args = [executable("ray"), "start", "--head", "--block", "--disable-usage-stats"]
        args += ["--node-ip-address", self.host, "--dashboard-host", self.host]
        args += ["--temp-dir", self.temp_dir, "--num-cpus", str(workers)]
        for flag, port in ports.items():
            args += [flag, str(port)]
        log = self.workdir / f"ray-start-{self.generation}.log"
        self.head = ManagedProcess(args, log, env)
        self.address = f"{self.host}:{ports['--port']}"
        self.dashboard_port = ports["--dashboard-port"]
        self.workers = workers

    def join_command(self) -> str | None:
        if not self.takes_remote_nodes:
            return None
        return (
            f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={self.token_file} "
            f"ray start --address {self.address}"
        )

    def scale(self, workers: int) -> None:
        logger.info("restarting the Ray head of %s with %d CPU slots", self.address, workers)
        if self.head is not None:
            self.head.stop()
        self._remove_temp_dir()
        self.start(workers)

    def stop(self) -> None:
        super().stop()  # the head first: Ray writes into its temp dir until it exits
        self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def processes(self) -> list[ManagedProcess]:
        return [self.head] if self.head is not None else []


def _metadata(token_file: str | None) -> list[tuple[str, str]]:
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
