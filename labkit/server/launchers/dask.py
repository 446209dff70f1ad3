"""Dask on the server: ``dask scheduler`` and ``dask worker`` processes, and the scheduler
asked for its ``identity`` over Dask's own comm (no Client)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from labkit.clusters.address import split_host_port
from labkit.clusters.certificates import TlsFiles, make_certificates
from labkit.clusters.credentials import NONE, Credentials
from labkit.clusters.ports import free_ports
from labkit.log import logger
from labkit.server.launchers.base import Launcher
from labkit.server.probes import Health
from labkit.server.processes import ManagedProcess, executable


class DaskLauncher(Launcher):
    """``dask scheduler`` plus one ``dask worker`` process per worker, all on ``host``.

    Workers are separate processes so that scaling down stops exactly the ones removed.
    """

    backend = "dask"
    dashboard_page = "status"
    label = "Dask"
    scale_hint = "Number of Dask worker processes"

    @classmethod
    async def ask(
        cls,
        address: str,
        timeout: float,
        credentials: Credentials = NONE,
    ) -> Health:
        return await _ask_scheduler(address, timeout, credentials)

    def __init__(self, workdir: Path, host: str, threads_per_worker: int = 1):
        super().__init__(workdir, host)
        self.threads_per_worker = threads_per_worker
        self.scheduler: ManagedProcess | None = None
        self.worker_processes: list[ManagedProcess] = []
        self.memory_limit = 0
        self.certificates: dict[str, TlsFiles] = {}  # off loopback: name -> files
        self._serial = 0

    def start(self, workers: int) -> None:
        import psutil

        port, dashboard = free_ports(2, self.host)
        self.dashboard_port = dashboard
        self.memory_limit = psutil.virtual_memory().total // max(workers, 1)
        args = [executable("dask"), "scheduler", "--host", self.host, "--port", str(port)]
        args += ["--dashboard-address", f"{self.host}:{dashboard}"]
        if self.takes_remote_nodes:  # reachable from other hosts: mutual TLS, or nobody gets in
            self.certificates = make_certificates(
                self.workdir / "tls", [self.host], ["scheduler", "worker", "client"]
            )
            args += self.certificates["scheduler"].dask_flags()
            client = self.certificates["client"]
            self.tls = {"ca_file": str(client.ca_file), "cert": str(client.cert)}
            self.tls["key"] = str(client.key)
        scheme = "tls" if self.certificates else "tcp"
        self.address = f"{scheme}://{self.host}:{port}"
        self.scheduler = ManagedProcess(args, self.workdir / "scheduler.log")
        self._add(workers)

    def _add(self, count: int) -> None:
        for _ in range(count):
            self._serial += 1
            name = f"w{self._serial}"
            args = [executable("dask"), "worker", self.address, "--host", self.host]
            args += ["--name", name, "--nworkers", "1"]
            args += ["--nthreads", str(self.threads_per_worker)]
            # A worker's own HTTP server binds every interface unless told otherwise.
            args += ["--dashboard-address", f"{self.host}:0"]
            args += ["--memory-limit", str(self.memory_limit)]
            args += ["--local-directory", str(self.workdir / "scratch")]
            args += ["--death-timeout", "60"]
            if self.certificates:
                args += self.certificates["worker"].dask_flags()
            self.worker_processes.append(ManagedProcess(args, self.workdir / f"{name}.log"))
        self.workers = len(self.worker_processes)

    def scale(self, workers: int) -> None:
        logger.info("scaling the Dask cluster at %s to %d workers", self.address, workers)
        if workers > len(self.worker_processes):
            self._add(workers - len(self.worker_processes))
        while len(self.worker_processes) > workers:
            self.worker_processes.pop().stop()
        self.workers = len(self.worker_processes)

    def join_command(self) -> str | None:
        if not self.certificates:
            return None
        flags = " ".join(self.certificates["worker"].dask_flags())
        return f"dask worker {self.address} {flags}"

    def processes(self) -> list[ManagedProcess]:
        head = [self.scheduler] if self.scheduler is not None else []
        return head + self.worker_processes


async def _ask_scheduler(address: str, timeout: float, credentials: Credentials) -> Health:
    from distributed.core import rpc

    from labkit.clusters.dask_auth import check_scheduler, configured_security

    security = credentials.dask_security() or configured_security()
    if address.startswith("tls://"):  # as labkit.connect does: a refused certificate says so
        await asyncio.to_thread(check_scheduler, address, security, timeout)
    scheduler = rpc(
        address, timeout=timeout, connection_args=security.get_connection_args("client")
    )
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
