"""A third cluster backend, "toy", in one module: a kernel-side Cluster that runs items here
and a server-side launcher that starts no processes (it only holds a listening socket, so the
server's probe finds something at its address). ``register()`` is its one registration line.

The launcher's health is whatever a test puts in ``REPORTS``, and its scale and stop wait on
``ToyLauncher.gate`` when one is set, so tests can hold a cluster in each manager state.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from labkit.clusters.backends import register_backend
from labkit.clusters.base import ChunkResult, Cluster
from labkit.clusters.credentials import NONE, Credentials
from labkit.clusters.mapping import run_chunk
from labkit.server.launchers import Launcher
from labkit.server.probes import Health
from labkit.server.processes import ManagedProcess

REPORTS: dict[str, Health] = {}  # address -> what the toy cluster says about itself


def register() -> None:
    register_backend("toy", cluster="tests.toy_backend:ToyCluster", launcher=LAUNCHER)


LAUNCHER = "tests.toy_backend:ToyLauncher"


class ToyCluster(Cluster):
    """Workers that run every item in this process."""

    backend = "toy"

    @classmethod
    def connect(
        cls,
        target: Any,
        *,
        workers: int | None,
        timeout: float,
        credentials: Credentials,
        release_previous: Callable[[], None],
    ) -> ToyCluster:
        release_previous()
        local = target.kind == "local"
        return cls(target.address or "toy://local", local=local, n=workers or 2)

    def __init__(self, address: str, *, local: bool, n: int):
        super().__init__(address, local=local)
        self.n = n

    def workers(self) -> list[dict[str, Any]]:
        return [
            {"id": f"toy-{i}", "host": "here", "cpus": 1, "gpus": 0, "memory_bytes": 0}
            for i in range(self.n)
        ]

    def _scale(self, n: int) -> None:
        self.n = n

    def _close(self) -> None:
        pass

    def run_chunks(
        self, fn: Callable[[Any], Any], chunks: list[list[Any]]
    ) -> Iterator[tuple[int, ChunkResult]]:
        for index, chunk in enumerate(chunks):
            yield index, run_chunk(fn, chunk)


class ToyLauncher(Launcher):
    """A managed toy cluster: a listening socket, and workers that are a number."""

    backend = "toy"
    dashboard_page = "toy-status"
    label = "Toy"
    worker_unit = "toys"
    gate: ClassVar[threading.Event | None] = None
    fail_start: ClassVar[bool] = False

    @classmethod
    async def ask(cls, address: str, timeout: float, credentials: Credentials = NONE) -> Health:
        return REPORTS.get(address, Health(False, error=f"no report for {address}"))

    def __init__(self, workdir: Path, host: str, greeting: str = "hello"):
        super().__init__(workdir, host)
        self.greeting = greeting
        self.socket: socket.socket | None = None
        self.broken: str | None = None
        self.stopped = False

    def start(self, workers: int) -> None:
        if self.fail_start:
            raise OSError("the toy cluster would not start")
        self.socket = socket.socket()
        self.socket.bind((self.host, 0))
        self.socket.listen()
        port = self.socket.getsockname()[1]
        self.address = f"toy://{self.host}:{port}"
        self.dashboard_port = port
        self.workers = workers
        REPORTS[self.address] = Health(True, workers=0)  # up, but no worker has joined yet

    def scale(self, workers: int) -> None:
        self._wait()
        self.workers = workers

    def stop(self) -> None:
        self._wait()
        if self.socket is not None:
            self.socket.close()
        self.stopped = True
        super().stop()

    def processes(self) -> list[ManagedProcess]:
        return []

    def failure(self) -> str | None:
        return self.broken

    def _wait(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
