"""The server side of a backend: start, resize, stop, probe a cluster, and find its dashboard.

An instance owns the OS processes of one managed local cluster; it never attaches to the
cluster it starts. Class methods answer for any cluster of the backend, managed or
registered: ``ask`` (what it says about itself, cheaply, without attaching), ``ready``
(whether a settling cluster has what it was asked for), ``dashboard_page`` and
``dashboard_token``. Instance methods block while processes stop, so the manager calls them
off the event loop, always from the same thread (see ``manager``).
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from labkit.clusters.address import on_loopback
from labkit.clusters.credentials import NONE, Credentials
from labkit.clusters.slurm import JobState
from labkit.server.models import BackendDescription, Where
from labkit.server.probes import Health
from labkit.server.processes import ManagedProcess


class Launcher(ABC):
    """The processes of one managed cluster; ``workdir`` holds their logs and scratch space."""

    backend: ClassVar[str]
    on: ClassVar[Where] = "local"  # where its workers run: processes here, or batch jobs
    dashboard_page: ClassVar[str] = ""  # the dashboard's landing page, under its root
    # How the sidebar names the backend and what its Scale field counts
    label: ClassVar[str] = ""  # e.g. "Dask"; default: the backend's name
    worker_unit: ClassVar[str] = "workers"  # what ``workers`` counts on a card
    scale_label: ClassVar[str] = "Workers"
    scale_hint: ClassVar[str] = "Number of workers"

    @classmethod
    def describe(cls, profiles: list[str] | None = None) -> BackendDescription:
        """The backend as the sidebar shows it (``GET /labkit/api/backends``)."""
        label = cls.label or cls.backend
        words = (cls.worker_unit, cls.scale_label, cls.scale_hint)
        return BackendDescription(cls.backend, label, *words, on=cls.on, profiles=profiles or [])

    def __init__(self, workdir: Path, host: str):
        self.workdir = workdir
        self.host = host
        self.address = ""  # where notebooks attach
        self.probe_address: str | None = None  # where the server asks it, if not ``address``
        self.dashboard_port: int | None = None
        self.token_file: str | None = None
        self.tls: dict[str, str] | None = None  # a client's TLS files, where the cluster wants them
        self.workers = 0

    @property
    def takes_remote_nodes(self) -> bool:
        """Off loopback, other hosts can reach the cluster: it then starts with auth on."""
        return not on_loopback(self.host)

    def jobs(self) -> list[JobState] | None:
        """The batch jobs its workers run in, as the batch system reports them; None when
        its workers are processes of this machine."""
        return None

    def refresh(self) -> None:
        """Learn what the cluster reported since the last look (a batch job's head writes
        its address once SLURM runs it); called off the event loop before each status."""
        return None

    def queued(self) -> bool:
        """Whether workers wait in a batch queue: a start does not time out meanwhile."""
        return any(job.state == "PENDING" for job in self.jobs() or ())

    def join_command(self) -> str | None:
        """The command another host runs to join this cluster as a worker node (with the
        credential files it names copied there); None on loopback, where no host can."""
        return None

    # -- any cluster of this backend ------------------------------------------------------
    @classmethod
    @abstractmethod
    async def ask(
        cls,
        address: str,
        timeout: float,
        credentials: Credentials = NONE,
    ) -> Health:
        """What the cluster at ``address`` says about itself (``probes.probe`` guards this
        with a connect check and a deadline, and turns what it raises into ``Health.error``).
        ``credentials``: Ray's token file or a Dask client's TLS files; a backend ignores
        what is not its own."""

    @classmethod
    def ready(cls, health: Health, wanted: int) -> bool:
        """Whether a starting or scaling cluster has the ``wanted`` workers it was asked for."""
        return (health.workers or 0) >= wanted

    @classmethod
    def dashboard_token(cls, token_file: str | None) -> str | None:
        """The bearer token the dashboard proxy sends, if the backend's dashboard wants one."""
        return None

    # -- the processes of one managed cluster ---------------------------------------------
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
