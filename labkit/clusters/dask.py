"""Dask backend: a LocalCluster on loopback, or a scheduler at ``tcp://`` or ``tls://host:port``."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from labkit.clusters.address import Target, split_host_port
from labkit.clusters.base import ChunkResult, Cluster
from labkit.clusters.credentials import Credentials
from labkit.clusters.dask_auth import check_scheduler, configured_security
from labkit.clusters.mapping import ChunkLost, run_chunk
from labkit.errors import ConnectError, ParameterError

LOOPBACK = "127.0.0.1"
SCATTER_BYTES = 2**20  # chunks at least this large are sent to a worker ahead of their task


class DaskCluster(Cluster):
    """A Dask cluster; a worker is one ``dask worker`` process (one thread each when local)."""

    backend = "dask"

    def __init__(self, client, *, local_cluster=None, timeout: float = 30.0):
        super().__init__(
            client.scheduler.address,
            local=local_cluster is not None,
            dashboard_url=_link(client),
        )
        self.client = client
        self.local_cluster = local_cluster
        self.timeout = timeout

    @classmethod
    def connect(
        cls,
        target: Target,
        *,
        workers: int | None,
        timeout: float,
        credentials: Credentials,
        release_previous: Callable[[], None],
    ) -> DaskCluster:
        from distributed import Client, LocalCluster

        if target.kind == "slurm":
            from labkit.clusters.dask_slurm import start_dask_on_slurm
            from labkit.clusters.slurm import check_request

            check_request(target.slurm)  # SLURM's own message, and the old connection kept
            release_previous()
            return start_dask_on_slurm(target.slurm, timeout)
        if target.kind == "local":
            release_previous()
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1,
                threads_per_worker=1,
                processes=True,
                host=LOOPBACK,
                dashboard_address=f"{LOOPBACK}:0",
                silence_logs=logging.ERROR,
            )
            return cls(Client(cluster, timeout=timeout), local_cluster=cluster, timeout=timeout)
        if credentials.token_file is not None:
            raise ParameterError(
                "token_file= is Ray's; a Dask cluster authenticates by TLS certificates "
                "(security=, or Dask's distributed.comm.tls configuration)"
            )
        security = credentials.dask_security()
        if security is None and target.address.startswith("tls://"):
            security = configured_security()
        check_scheduler(target.address, security, timeout)
        release_previous()
        try:
            client = Client(target.address, timeout=timeout, security=security)
        except (OSError, TimeoutError) as exc:
            raise ConnectError(
                f"cannot attach to the Dask scheduler at {target.address}: {exc}",
                address=target.address,
                backend="dask",
            ) from exc
        return cls(client, timeout=timeout)

    def _worker_info(self) -> dict[str, dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)
        except TypeError:  # distributed before the n_workers argument listed all workers
            info = self.client.scheduler_info()
        return info["workers"]

    def workers(self) -> list[dict[str, Any]]:
        self._check_open()
        return [
            {
                "id": address,
                "host": worker.get("host", split_host_port(address)[0]),
                "cpus": int(worker.get("nthreads", 0)),
                "gpus": int(worker.get("resources", {}).get("GPU", 0)),
                "memory_bytes": int(worker.get("memory_limit") or 0),
            }
            for address, worker in self._worker_info().items()
        ]

    def run_on_each_host(self, fn: Callable[[], Any]) -> dict[str, Any]:
        self._check_open()
        return self.client.run(fn)

    def run_chunks(
        self, fn: Callable[[Any], Any], chunks: list[list[Any]]
    ) -> Iterator[tuple[int, ChunkResult]]:
        from distributed import as_completed

        futures = [
            self.client.submit(run_chunk, fn, self._argument(chunk), pure=False) for chunk in chunks
        ]
        position = {future.key: index for index, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                try:
                    outcome = future.result()
                except Exception as exc:  # run_chunk catches fn's own errors; this is the cluster's
                    if getattr(exc, "reason", None) == "scheduler-connection-lost":
                        raise self._connection_lost("Dask scheduler") from exc
                    outcome = ChunkLost(exc)
                yield position[future.key], outcome
        finally:
            self.client.cancel([future for future in futures if not future.done()])

    def _argument(self, chunk: list[Any]) -> Any:
        """A large chunk goes straight to a worker (``scatter``); a small one rides in the task.

        Data inside a task travels through the scheduler (which for a local cluster runs in
        this process) before it reaches a worker: for chunks of arrays that costs more than
        the work.
        """
        from dask.sizeof import sizeof

        if sizeof(chunk) < SCATTER_BYTES:
            return chunk
        return self.client.scatter([chunk], hash=False)[0]

    def _scale(self, n: int) -> None:
        self.local_cluster.scale(n)
        deadline = time.monotonic() + self.timeout
        while len(self._worker_info()) != n:
            if time.monotonic() > deadline:
                raise ConnectError(
                    f"the local Dask cluster did not reach {n} workers within {self.timeout:g} s",
                    address=self.address,
                    backend="dask",
                )
            time.sleep(0.1)

    def _close(self) -> None:
        self.client.close()
        if self.local_cluster is not None:
            self.local_cluster.close()


def _link(client) -> str | None:
    try:
        return client.dashboard_link
    except Exception:  # the scheduler may run without a dashboard
        return None
