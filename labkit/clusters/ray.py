"""Ray backend: an embedded single-node loopback cluster, a GCS address, or a Ray Client."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from labkit.clusters import ray_worker_setup
from labkit.clusters.address import Target, on_loopback
from labkit.clusters.base import ChunkResult, Cluster
from labkit.clusters.credentials import Credentials
from labkit.clusters.mapping import ChunkLost, run_chunk
from labkit.clusters.ray_auth import check_access, find_token, use_token
from labkit.clusters.ray_processes import ray_process_env
from labkit.errors import ConnectError, ParameterError

LOOPBACK = "127.0.0.1"


def _loopback_environment() -> None:
    # Without this Ray rewrites 127.0.0.1 to the machine's routable address, and the
    # processes it starts inherit the setting. Usage stats would try the network.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray reads the variable once, at import; this process may have imported it already.
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _on_loopback(address: str | None) -> bool:
    """An address on this host's loopback: a single-node cluster, as Ray's loopback mode wants."""
    if not address:
        return True
    return on_loopback(address.split("://")[-1].rsplit(":", 1)[0])


# Ray keeps AF_UNIX sockets at <temp dir>/session_<time>_<pid>/sockets/dash_<module>: about 70
# bytes past the temp dir, and Linux allows 107 in all. A longer path does not fail `ray start`;
# a dashboard module dies instead ("Module MetricsHead failed to start. Received EOF").
_RAY_TEMP_DIR_MAX = 32


def new_ray_temp_dir() -> str:
    """A fresh directory for one Ray node's sessions, short enough for Ray's socket paths."""
    parent = tempfile.gettempdir()
    if len(parent) > _RAY_TEMP_DIR_MAX - len("/labkit-ray-12345678"):
        parent = "/tmp"
    return tempfile.mkdtemp(prefix="labkit-ray-", dir=parent)


# A Ray Client that loses its server retries every call until this many seconds have passed,
# then fails them all with ConnectionError; Ray's default is 30 s whatever timeout= says.
RECONNECT_ENV = "RAY_CLIENT_RECONNECT_GRACE_PERIOD"


# How a Ray Client init fails when the head could not start the server process it gives
# each client: gRPC's fork handlers kill 1-4 % of them at birth on a head that runs without
# labkit's Ray process settings (ray_processes), as one started by hand may
_CLIENT_SERVER_DIED = ("Starting Ray client server failed", "Proxy failed to Connect to backend")


def _init_remote(address: str, timeout: float, attempts: int = 2) -> Any:
    """``ray.init`` on a running cluster; a Ray Client whose per-client server died starting
    is tried once more (the head starts a fresh one on another port)."""
    import ray

    for attempt in range(1, attempts + 1):
        try:
            with _reconnect_within(timeout):
                return ray.init(
                    address=address,
                    log_to_driver=True,
                    runtime_env={"worker_process_setup_hook": ray_worker_setup.HOOK},
                )
        except ConnectionAbortedError as exc:
            if attempt == attempts or not any(text in str(exc) for text in _CLIENT_SERVER_DIED):
                raise
            with contextlib.suppress(Exception):
                ray.shutdown()
            warnings.warn(
                f"the Ray head at {address} could not start this client's server; trying again",
                stacklevel=4,
            )
    raise AssertionError("unreachable")


def lost_server(exc: BaseException) -> bool:
    """Whether a Ray Client call failed for want of its server: ``ConnectionError`` from the
    calls Ray retries once their grace period is over, gRPC's UNAVAILABLE from those it does
    not retry (``ray.nodes()``, which ``workers`` and ``map`` ask)."""
    if isinstance(exc, ConnectionError):
        return True
    import grpc

    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


@contextmanager
def _reconnect_within(timeout: float) -> Iterator[None]:
    """Give a Ray Client made inside this block half of ``timeout`` to win back a lost server,
    so a lost head is an error within ``timeout`` (Ray reads the setting as it connects).
    A value the user set is left alone."""
    if RECONNECT_ENV in os.environ:
        yield
        return
    os.environ[RECONNECT_ENV] = str(max(1, int(timeout / 2)))
    try:
        yield
    finally:
        os.environ.pop(RECONNECT_ENV, None)


def _http(url: str | None) -> str | None:
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


class RayCluster(Cluster):
    """A Ray cluster. Ray's unit of capacity is the node: ``workers()`` lists nodes.

    A local cluster is a single node on loopback (Ray runs multi-node only off loopback), so
    ``scale(n)`` restarts it with ``n`` CPU slots; objects and actors do not survive that.
    """

    backend = "ray"

    def __init__(
        self,
        address: str,
        *,
        local: bool,
        dashboard_url: str | None,
        temp_dir=None,
        timeout: float = 30.0,
    ):
        super().__init__(address, local=local, dashboard_url=dashboard_url)
        self.temp_dir = temp_dir
        self.timeout = timeout
        self._remote_chunk = None
        self._restore_auth: Callable[[], None] = lambda: None  # the token settings before

    @classmethod
    def connect(
        cls,
        target: Target,
        *,
        workers: int | None,
        timeout: float,
        credentials: Credentials,
        release_previous: Callable[[], None],
    ) -> RayCluster:
        import ray

        if credentials.for_dask:
            raise ParameterError(
                "security= holds Dask's TLS settings; a Ray cluster authenticates clients by "
                "its token (token_file=)"
            )
        if target.kind == "slurm":
            from labkit.clusters.ray_slurm import start_ray_on_slurm

            return start_ray_on_slurm(target.slurm, timeout, release_previous)
        if target.kind == "local" or _on_loopback(target.address):
            _loopback_environment()
        if target.kind == "local":
            release_previous()
            return cls._start_local(workers)
        token = find_token(credentials.token_file)
        check_access(target.address, target.kind == "ray-client", token, timeout)
        release_previous()
        restore_auth = use_token(token)
        try:
            context = _init_remote(target.address, timeout)
        except Exception as exc:
            # a Ray Client refused at its init stays half set up in this process, and the next
            # ray.init (any cluster) then fails with an empty message: take it down now
            with contextlib.suppress(Exception):
                ray.shutdown()
            restore_auth()
            raise ConnectError(
                f"cannot attach to the Ray cluster at {target.address}: {exc}",
                address=target.address,
                backend="ray",
            ) from exc
        dashboard = _http(context.dashboard_url)
        cluster = cls(target.address, local=False, dashboard_url=dashboard, timeout=timeout)
        cluster._restore_auth = restore_auth
        return cluster

    @classmethod
    def _start_local(cls, num_cpus: int | None) -> RayCluster:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.environ.update(ray_process_env())  # the processes Ray starts inherit this environment
        temp_dir = new_ray_temp_dir()
        try:
            context = ray.init(
                address="local",
                num_cpus=num_cpus,
                _temp_dir=temp_dir,
                _node_ip_address=LOOPBACK,
                dashboard_host=LOOPBACK,
            )
        except Exception as exc:
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise ConnectError(f"cannot start a local Ray cluster: {exc}", backend="ray") from exc
        address = context.address_info["gcs_address"]
        return cls(
            address, local=True, dashboard_url=_http(context.dashboard_url), temp_dir=temp_dir
        )

    @contextmanager
    def _head_answers(self) -> Iterator[None]:
        """Turn a Ray Client's lost server (see ``lost_server``) into a ``ConnectError``
        naming the head; the client is closed, as Ray never reconnects it after that."""
        try:
            yield
        except Exception as exc:
            if not lost_server(exc):
                raise
            with contextlib.suppress(Exception):
                self.close()
            raise self._connection_lost("Ray head") from exc

    def workers(self) -> list[dict[str, Any]]:
        import ray

        self._check_open()
        with self._head_answers():
            found = ray.nodes()
        nodes = []
        for node in found:
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            nodes.append(
                {
                    "id": node["NodeID"],
                    "host": node["NodeManagerAddress"],
                    "cpus": int(resources.get("CPU", 0)),
                    "gpus": int(resources.get("GPU", 0)),
                    "memory_bytes": int(resources.get("memory", 0)),
                }
            )
        return nodes

    def run_on_each_host(self, fn: Callable[[], Any]) -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._check_open()
        remote = ray.remote(num_cpus=0)(_call)  # any callable, partials included
        with self._head_answers():
            pending = {
                node["NodeManagerAddress"]: remote.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                ).remote(fn)
                for node in ray.nodes()
                if node.get("Alive")
            }
            return dict(zip(pending, ray.get(list(pending.values())), strict=True))

    def run_chunks(
        self, fn: Callable[[Any], Any], chunks: list[list[Any]]
    ) -> Iterator[tuple[int, ChunkResult]]:
        import ray

        if self._remote_chunk is None:
            self._remote_chunk = ray.remote(run_chunk)
        pending: list = []
        try:
            with self._head_answers():
                fn_ref = ray.put(fn)
                refs = [self._remote_chunk.remote(fn_ref, chunk) for chunk in chunks]
                position = {ref: index for index, ref in enumerate(refs)}
                pending = list(refs)
                while pending:
                    ready, pending = ray.wait(pending, num_returns=1)
                    for ref in ready:
                        try:
                            outcome = ray.get(ref)
                        except ray.exceptions.RayError as exc:
                            outcome = ChunkLost(exc)
                        yield position[ref], outcome
        finally:
            if not self.closed:  # a lost head took its tasks along
                for ref in pending:
                    ray.cancel(ref)

    def _scale(self, n: int) -> None:
        warnings.warn(
            "scaling a local Ray cluster restarts it with the new number of CPU slots; "
            "objects and actors held in it are lost",
            stacklevel=3,
        )
        self._close()
        fresh = self._start_local(n)
        self.address, self.dashboard_url, self.temp_dir = (
            fresh.address,
            fresh.dashboard_url,
            fresh.temp_dir,
        )
        self._remote_chunk = None

    def _close(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            self._restore_auth()
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
