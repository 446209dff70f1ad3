"""Start, resize and stop the processes of a managed local cluster, one launcher per backend.

A launcher owns OS processes only; it never attaches to the cluster it starts (the server
asks the cluster how it is doing through ``probes``). Methods block while processes stop, so
the manager calls them off the event loop, always from the same thread (see ``manager``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from labkit.clusters.ray import new_ray_temp_dir
from labkit.clusters.ray_auth import default_token_path, find_token
from labkit.server.processes import ManagedProcess, executable, free_ports


class Launcher(ABC):
    """The processes of one managed cluster; ``workdir`` holds their logs and scratch space."""

    backend: ClassVar[str]

    def __init__(self, workdir: Path, host: str):
        self.workdir = workdir
        self.host = host
        self.address = ""
        self.dashboard_port: int | None = None
        self.token_file: str | None = None
        self.workers = 0

    @abstractmethod
    def start(self, workers: int) -> None:
        """Spawn the processes and return at once; the cluster answers a few seconds later."""

    @abstractmethod
    def scale(self, workers: int) -> None:
        """Resize to ``workers`` (what a worker is depends on the backend)."""

    @abstractmethod
    def processes(self) -> list[ManagedProcess]:
        """Every process this cluster runs now."""

    def stop(self) -> None:
        """Stop every process by PID and remove the work directory."""
        for process in reversed(self.processes()):
            process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes()]

    def failure(self) -> str | None:
        """Why the cluster is broken: a process that exited on its own, with its log tail."""
        for process in self.processes():
            if not process.alive():
                name = Path(process.args[0]).name
                what = " ".join([name, *process.args[1:2]])
                tail = process.log_tail()
                return f"`{what}` (pid {process.pid}) exited with {process.popen.returncode}" + (
                    f": {tail}" if tail else ""
                )
        return None


class RayLauncher(Launcher):
    """``ray start --head --block`` on ``host``: one node with ``workers`` CPU slots.

    Ray runs multi-node only off loopback, so resizing restarts the head with the new number of
    CPU slots (objects and actors in it are lost). Token authentication is on, with the token
    where Ray keeps it (``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; created if absent).
    """

    backend = "ray"
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

    def __init__(self, workdir: Path, host: str):
        super().__init__(workdir, host)
        self.head: ManagedProcess | None = None
        self.generation = 0
        # Outside ``workdir``, whose configurable root may be too long for Ray's socket paths.
        self.temp_dir: str | None = None

    def _token_env(self) -> dict[str, str]:
        env = dict(os.environ)
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
        env = self._token_env()
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

    def scale(self, workers: int) -> None:
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


class DaskLauncher(Launcher):
    """``dask scheduler`` plus one ``dask worker`` process per worker, all on ``host``.

    Workers are separate processes so that scaling down stops exactly the ones removed.
    """

    backend = "dask"
    threads_per_worker = 1

    def __init__(self, workdir: Path, host: str):
        super().__init__(workdir, host)
        self.scheduler: ManagedProcess | None = None
        self.worker_processes: list[ManagedProcess] = []
        self.memory_limit = 0
        self._serial = 0

    def start(self, workers: int) -> None:
        import psutil

        port, dashboard = free_ports(2, self.host)
        self.address = f"tcp://{self.host}:{port}"
        self.dashboard_port = dashboard
        self.memory_limit = psutil.virtual_memory().total // max(workers, 1)
        args = [executable("dask"), "scheduler", "--host", self.host, "--port", str(port)]
        args += ["--dashboard-address", f"{self.host}:{dashboard}"]
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
            self.worker_processes.append(ManagedProcess(args, self.workdir / f"{name}.log"))
        self.workers = len(self.worker_processes)

    def scale(self, workers: int) -> None:
        if workers > len(self.worker_processes):
            self._add(workers - len(self.worker_processes))
        while len(self.worker_processes) > workers:
            self.worker_processes.pop().stop()
        self.workers = len(self.worker_processes)

    def processes(self) -> list[ManagedProcess]:
        head = [self.scheduler] if self.scheduler is not None else []
        return head + self.worker_processes


LAUNCHERS: dict[str, type[Launcher]] = {"ray": RayLauncher, "dask": DaskLauncher}
