"""The clusters a Jupyter server knows: the ones it started, the ones registered by address,
and the local ones its kernels started themselves.

Managed clusters are real processes (``ray start --head``, ``dask scheduler`` + ``dask
worker``), tracked by PID and stopped on DELETE and when the server shuts down; nothing of
them lives inside the server process. Live figures come from asking each cluster (``probes``).
Everything that differs between backends is their launcher's (``launcher_classes``), so a
test can hand the manager fake launchers and walk a cluster through its states.
Every change rewrites the registry file, so ``labkit.connect(NAME)`` in a kernel of this
server resolves the names shown in the sidebar.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from labkit.checks import whole
from labkit.clusters.address import parse_address, split_host_port
from labkit.clusters.announce import announced
from labkit.clusters.backends import load
from labkit.clusters.credentials import Credentials
from labkit.clusters.dask_auth import check_tls_files
from labkit.clusters.registry import ClusterEntry, read_registry, registry_path, write_registry
from labkit.clusters.slurm import SlurmOptions, profile_options, slurm_profiles
from labkit.errors import (
    ClusterNotFoundError,
    LabkitError,
    ParameterError,
    RegistryError,
    UnsupportedOperationError,
)
from labkit.server.dashboards import DASHBOARD_ROUTE
from labkit.server.launchers import Launcher, launcher_targets
from labkit.server.models import (
    BackendDescription,
    ClusterDescription,
    ClusterStatus,
    Origin,
    Phase,
)
from labkit.server.probes import Health, probe_with
from labkit.server.processes import pid_alive

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "::1", "::"}


@dataclass(frozen=True)
class DashboardTarget:
    """Where the Jupyter server forwards a cluster's dashboard requests, and with what token."""

    host: str
    port: int
    token: str | None = None


@dataclass
class ClusterRecord:
    """The server's own facts about one cluster; live figures come from ``probe``."""

    id: str
    name: str
    backend: str
    address: str
    origin: Origin  # "managed" (started here), "registered" (by address) or "kernel"
    launcher: Launcher | None = None
    token_file: str | None = None
    tls: dict[str, str] | None = None  # a Dask client's files, for a tls:// scheduler
    phase: Phase = "running"  # the phases of a managed cluster
    busy: bool = False  # a start, scale or stop is under way
    requested: int | None = None
    since: float = field(default_factory=time.monotonic)
    kernel_pid: int | None = None
    failure: str | None = None  # why a managed cluster broke, as its launcher first said it

    @property
    def managed(self) -> bool:
        return self.origin == "managed"


class ClusterManager(LoggingConfigurable):
    """Starts, registers, scales, stops and describes clusters for the REST handlers."""

    bind_host = Unicode(
        "127.0.0.1",
        config=True,
        help="Interface managed clusters listen on. Loopback keeps them private to this "
        "machine; their dashboards are reachable through the Jupyter server's proxy anyway.",
    )
    default_workers = Integer(2, config=True, help="Workers of a local cluster when not given.")
    max_workers = Integer(64, config=True, help="Upper bound on workers a request may ask for.")
    startup_timeout = Float(
        120.0,
        config=True,
        help="Seconds a managed cluster may take to answer before it is an error.",
    )
    probe_timeout = Float(
        3.0, config=True, help="Seconds to wait for a cluster's answer when reporting status."
    )
    launcher_classes = Dict(
        config=True,
        help="Backend name -> its Launcher class, or a 'module:Class' import string. Default: "
        "the launchers of the registered backends (clusters.backends).",
    )
    slurm_launcher_classes = Dict(
        config=True,
        help="Backend name -> the Launcher class (or 'module:Class') that runs its workers as "
        "SLURM jobs. Default: those the registered backends name (clusters.backends).",
    )
    slurm_profiles = Dict(
        config=True,
        help="Named SLURM option sets the sidebar offers, name -> options (partition, account, "
        "cores, memory, walltime, job_extra, prologue, interface, startup_timeout, "
        "log_directory), e.g. {'debug': {'partition': 'debug', 'walltime': '00:30:00'}}. "
        "Default: the profiles file ($LABKIT_SLURM_PROFILES or ~/.labkit/slurm-profiles.json).",
    )
    launcher_options = Dict(
        config=True,
        help="Backend name -> keyword options for its launcher, e.g. "
        "{'dask': {'threads_per_worker': 2}}.",
    )
    registry_file = Unicode(
        "",
        config=True,
        help="The registry kernels read for `labkit.connect(NAME)`; empty: "
        "labkit-clusters.json in Jupyter's runtime directory.",
    )
    work_root = Unicode(
        "", config=True, help="Where managed clusters keep logs and scratch; empty: the temp dir."
    )
    proxy_dashboards = Bool(
        True,
        config=True,
        help="Serve dashboards of clusters on this machine through the Jupyter server "
        "(/labkit/dashboard/ID/, on jupyter-server-proxy), so they work where only Jupyter's "
        "port is reachable; otherwise report their own http://host:port address.",
    )
    proxy_remote_dashboards = Bool(
        True,
        config=True,
        help="Also proxy the dashboards of registered clusters on other hosts, at the host of "
        "the address they were registered with (never a host named by a request), so a "
        "notebook user reaches them with Jupyter's auth where only Jupyter's port is open.",
    )
    list_kernel_clusters = Bool(
        True, config=True, help="Also list the local clusters that kernels started themselves."
    )
    base_url = Unicode("/", help="The Jupyter server's base URL, for proxied dashboard links.")
    proxy_available = Bool(False, help="Whether the dashboard proxy route is served.")

    @default("launcher_classes")
    def _registered_launchers(self) -> dict[str, Any]:
        return launcher_targets()

    @default("slurm_launcher_classes")
    def _registered_slurm_launchers(self) -> dict[str, Any]:
        return launcher_targets(on="slurm")

    @default("slurm_profiles")
    def _profiles_file(self) -> dict[str, Any]:
        return slurm_profiles()

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._clusters: dict[str, ClusterRecord] = {}
        self._owned: set[str] = set()
        self._dashboards: dict[str, str] = {}  # cluster id -> "host:port" the cluster reported
        # Processes are spawned from this one long-lived thread: Linux delivers the
        # parent-death signal when the spawning *thread* ends, so it must outlive them.
        self._process_thread = ThreadPoolExecutor(1, thread_name_prefix="labkit-processes")
        self._closed = False

    # -- public API used by the handlers ----------------------------------------------
    async def list_clusters(self) -> list[ClusterDescription]:
        records = list(self._clusters.values())
        if self.list_kernel_clusters:
            records += await asyncio.to_thread(self._kernel_records)
        ids = {record.id for record in records}
        self._dashboards = {key: value for key, value in self._dashboards.items() if key in ids}
        return list(await asyncio.gather(*(self._describe(record) for record in records)))

    async def get_cluster(self, cluster_id: str) -> ClusterDescription:
        return await self._describe(await self._find(cluster_id))

    async def start_cluster(
        self,
        backend: str,
        workers: int | None = None,
        name: str | None = None,
        on: str | None = None,
        profile: str | None = None,
    ) -> ClusterDescription:
        """Start a managed cluster; returns at once with status ``starting``.

        ``on="slurm"``: its workers are SLURM jobs (``workers`` of them) with the options of
        ``profile`` (one of ``slurm_profiles``; None: SLURM's defaults); else local processes.
        """
        self._check_open()
        if on == "slurm":
            launcher_class = self._launcher_class(backend, self.slurm_launcher_classes, "on SLURM")
            options = {"options": self._slurm_options(profile)}
        elif on in (None, "local"):
            if profile is not None:
                raise ParameterError("a SLURM profile applies to on='slurm' only")
            launcher_class = self._launcher_class(backend)
            options = self.launcher_options.get(backend, {})
        else:
            raise ParameterError(f"unknown 'on' {on!r}: choose local or slurm")
        workers = self._check_workers(self.default_workers if workers is None else workers)
        prefix = backend if on != "slurm" else f"{backend}-slurm"
        name = self._check_name(name) if name is not None else self._new_name(prefix)
        root = self.work_root or None
        workdir = Path(tempfile.mkdtemp(prefix=f"labkit-{prefix}-", dir=root))
        launcher = launcher_class(workdir, self.bind_host, **options)
        record = ClusterRecord(
            name, name, backend, "", "managed", launcher, phase="starting", busy=True
        )
        record.requested = workers
        self._clusters[record.id] = record
        self._owned.add(record.id)
        try:
            await self._in_process_thread(launcher.start, workers)
        except BaseException:
            del self._clusters[record.id]
            await self._in_process_thread(launcher.stop)
            raise
        record.address, record.token_file = launcher.address, launcher.token_file
        record.tls = launcher.tls  # off loopback: the client files of its mutual TLS
        record.busy, record.since = False, time.monotonic()
        self.log.info("labkit: started %s cluster %s at %s", backend, name, record.address)
        self._write_registry()
        return await self._describe(record)

    async def register_cluster(
        self,
        address: str,
        name: str | None = None,
        backend: str | None = None,
        token_file: str | None = None,
        tls: dict[str, str] | None = None,
    ) -> ClusterDescription:
        """Remember a remote cluster by address; an unreachable one shows its error.

        ``token_file``: a Ray cluster's token; ``tls``: a Dask client's ``ca_file``, ``cert``
        and ``key`` for a ``tls://`` scheduler (the probe and connecting by name use them).
        """
        self._check_open()
        if not isinstance(address, str) or not address.strip():
            raise ParameterError("a remote cluster needs an 'address', e.g. tcp://HOST:8786")
        if backend is not None:
            self._launcher_class(backend)
        target = parse_address(address.strip(), backend)
        if target.kind in ("local", "name"):
            raise ParameterError(
                f"{address!r} is not a cluster address: use ray://HOST:PORT (Ray Client), "
                "HOST:PORT (Ray GCS), or tcp://HOST:PORT (Dask scheduler)"
            )
        for record in self._clusters.values():
            if record.address == target.address:
                raise ParameterError(f"{target.address} is already listed as {record.name!r}")
        if token_file is not None:
            if not isinstance(token_file, str) or not Path(token_file).expanduser().is_file():
                raise ParameterError(f"token file {token_file!r} does not exist")
            token_file = str(Path(token_file).expanduser().resolve())
        if tls is not None:
            tls = check_tls_files(tls)
        name = self._check_name(name) if name else self._new_name(target.backend)
        record = ClusterRecord(name, name, target.backend, target.address, "registered")
        record.token_file, record.tls = token_file, tls
        self._clusters[record.id] = record
        self._owned.add(record.id)
        self._write_registry()
        return await self._describe(record)

    async def scale_cluster(self, cluster_id: str, workers: int) -> ClusterDescription:
        """Resize a managed cluster: Dask adds or stops workers, Ray restarts its head."""
        record = await self._find(cluster_id)
        if not record.managed:
            where = f"kernel (pid {record.kernel_pid})" if record.origin == "kernel" else "remote"
            raise UnsupportedOperationError(
                f"cannot scale {record.name!r}: it is a {where} cluster at {record.address}; "
                "only clusters this server started can be scaled"
            )
        workers = self._check_workers(workers)
        if record.busy:
            raise UnsupportedOperationError(f"cluster {record.name!r} is {record.phase}; try again")
        assert record.launcher is not None
        record.busy, record.phase, record.requested = True, "scaling", workers
        record.failure = None  # a scale starts what was lost again: judge it afresh
        try:
            await self._in_process_thread(record.launcher.scale, workers)
        finally:
            record.busy, record.since = False, time.monotonic()
        record.address = record.launcher.address
        self._write_registry()
        return await self._describe(record)

    async def remove_cluster(self, cluster_id: str) -> None:
        """Stop a managed cluster (by PID) or forget a registered one."""
        record = await self._find(cluster_id)
        if record.origin == "kernel":
            raise UnsupportedOperationError(
                f"{record.name!r} was started by the kernel with pid {record.kernel_pid}; "
                "stop it there with %labkit disconnect"
            )
        if record.managed and record.busy and record.phase == "stopping":
            return
        if record.managed:
            assert record.launcher is not None
            record.busy, record.phase = True, "stopping"
            await self._in_process_thread(record.launcher.stop)
            self.log.info("labkit: stopped %s cluster %s", record.backend, record.name)
        self._clusters.pop(record.id, None)
        self._dashboards.pop(record.id, None)
        self._write_registry()

    async def shutdown(self) -> None:
        """Stop every managed cluster; called when the Jupyter server shuts down."""
        if self._closed:
            return
        self._closed = True
        managed = [record for record in self._clusters.values() if record.managed]
        for record in managed:
            record.busy, record.phase = True, "stopping"
            assert record.launcher is not None
            try:
                await self._in_process_thread(record.launcher.stop)
            except Exception:  # keep stopping the others
                self.log.exception("labkit: could not stop cluster %s", record.name)
        self._clusters.clear()
        try:
            self._write_registry()
        except LabkitError as exc:
            self.log.warning("labkit: %s", exc)
        self._process_thread.shutdown(wait=True)

    def managed_pids(self) -> list[int]:
        return [
            pid
            for record in self._clusters.values()
            if record.launcher is not None
            for pid in record.launcher.pids()
        ]

    async def dashboard_target(self, cluster_id: str) -> DashboardTarget | None:
        """Where to forward the dashboard of ``cluster_id``; None when not on this machine."""
        record = await self._find(cluster_id)
        hostport = self._dashboard_address(record)
        if hostport is None and not record.managed:
            hostport = (await self._probe(record)).dashboard
        if not hostport:
            return None
        host, port = split_host_port(hostport)
        if not self._proxies(record, host):
            return None
        if host in ("0.0.0.0", "::", "localhost"):
            host = "127.0.0.1"
        launcher_class = self._launcher_class(record.backend)
        token = await asyncio.to_thread(launcher_class.dashboard_token, record.token_file)
        return DashboardTarget(host, port, token)

    # -- description ------------------------------------------------------------------
    async def _describe(self, record: ClusterRecord) -> ClusterDescription:
        status, error, health = await self._status(record)
        if health is not None and health.dashboard and not record.managed:
            self._dashboards[record.id] = health.dashboard
        return ClusterDescription(
            id=record.id,
            name=record.name,
            backend=record.backend,
            address=record.address,
            status=status,
            workers=health.workers if health else None,
            cpus=health.cpus if health else None,
            gpus=health.gpus if health else None,
            memory_bytes=health.memory_bytes if health else None,
            dashboard_url=self._dashboard_url(record),
            managed=record.managed,
            origin=record.origin,
            requested_workers=record.requested,
            error=error,
            connect=(
                f"%labkit connect {record.name}"
                if record.origin != "kernel"
                else f"%labkit connect {record.address} --backend {record.backend}"
            ),
            join=record.launcher.join_command() if record.launcher is not None else None,
            jobs=await asyncio.to_thread(record.launcher.jobs) if record.launcher else None,
        )

    async def _status(
        self, record: ClusterRecord
    ) -> tuple[ClusterStatus, str | None, Health | None]:
        if record.busy and record.phase == "stopping":
            return "stopping", None, None
        if record.busy:
            return record.phase, None, None
        if record.managed:
            assert record.launcher is not None
            await asyncio.to_thread(record.launcher.refresh)
            if record.launcher.address != record.address:  # a batch job's head has started
                record.address = record.launcher.address
                self._write_registry()
            # Kept once said: what a batch system tells of an ended job (cancelled, at its
            # walltime) it forgets a while later. Off the event loop: squeue may be slow.
            record.failure = record.failure or await asyncio.to_thread(record.launcher.failure)
            if record.failure:
                return "error", record.failure, None
        health = await self._probe(record)
        if not record.managed:
            if health.reachable:
                return "running", None, health
            return "unreachable", health.error, health
        waited = time.monotonic() - record.since
        settling = record.phase in ("starting", "scaling")
        if health.reachable:
            ready = type(record.launcher).ready(health, record.requested or 1)
            if settling and not ready and waited < self.startup_timeout:
                return record.phase, None, health
            record.phase = "running"
            return "running", None, health
        # time a batch system keeps workers in its queue is no failure
        if settling and waited < self.startup_timeout:
            return record.phase, None, health
        if settling and await asyncio.to_thread(record.launcher.queued):
            return record.phase, None, health
        return "error", health.error, health

    def _dashboard_address(self, record: ClusterRecord) -> str | None:
        """The dashboard's "host:port": known for managed clusters, else as last reported."""
        launcher = record.launcher
        if launcher is not None:
            return f"{launcher.host}:{launcher.dashboard_port}" if launcher.dashboard_port else None
        return self._dashboards.get(record.id)

    def _proxies(self, record: ClusterRecord, host: str) -> bool:
        """Whether this server forwards to a dashboard on ``host``: this machine's, or the
        registered cluster's own host (the one its address names)."""
        if host in LOCAL_HOSTS or (record.managed and host == self.bind_host):
            return True
        if record.launcher is not None and record.launcher.on == "slurm":
            return True  # its head is on a compute node, which browsers rarely reach
        if not self.proxy_remote_dashboards or record.managed:
            return False
        try:
            return host == split_host_port(record.address)[0]
        except ValueError:
            return False

    def _dashboard_url(self, record: ClusterRecord) -> str | None:
        """The link the sidebar shows: proxied through Jupyter when on this machine."""
        hostport = self._dashboard_address(record)
        if not hostport:
            return None
        try:
            host, port = split_host_port(hostport)
        except ValueError:
            return None
        page = self._launcher_class(record.backend).dashboard_page
        if self.proxy_dashboards and self.proxy_available and self._proxies(record, host):
            base = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
            return f"{base}{DASHBOARD_ROUTE}/{record.id}/{page}"
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/{page}"

    # -- bookkeeping ------------------------------------------------------------------
    async def _find(self, cluster_id: str) -> ClusterRecord:
        record = self._clusters.get(cluster_id)
        if record is not None:
            return record
        if self.list_kernel_clusters and cluster_id.startswith("kernel-"):
            for candidate in await asyncio.to_thread(self._kernel_records):
                if candidate.id == cluster_id:
                    return candidate
        raise ClusterNotFoundError(cluster_id)

    def _kernel_records(self) -> list[ClusterRecord]:
        known = {record.address for record in self._clusters.values()}
        records = []
        for entry in announced():
            if entry.get("address") in known or entry.get("backend") not in self.launcher_classes:
                continue
            pid = int(entry["pid"])
            record = ClusterRecord(
                f"kernel-{entry['key']}",
                f"kernel-{pid}-{entry['backend']}",
                entry["backend"],
                str(entry["address"]),
                "kernel",
            )
            record.kernel_pid = pid
            records.append(record)
        return records

    def backends(self) -> list[BackendDescription]:
        """The backends this server starts clusters of, as the sidebar names them; those on
        SLURM only where SLURM's commands are on PATH."""
        found = [self._launcher_class(name).describe() for name in self.launcher_classes]
        if shutil.which("sbatch"):
            profiles = sorted(self.slurm_profiles)
            for name in self.slurm_launcher_classes:
                launcher = self._launcher_class(name, self.slurm_launcher_classes, "on SLURM")
                found.append(launcher.describe(profiles))
        return found

    def _launcher_class(
        self, backend: str, launchers: dict[str, Any] | None = None, where: str = ""
    ) -> type[Launcher]:
        """The launcher of ``backend`` (among ``launchers``, default the local ones);
        ParameterError naming the known ones otherwise."""
        launchers = self.launcher_classes if launchers is None else launchers
        if not isinstance(backend, str) or backend not in launchers:
            known = ", ".join(sorted(launchers)) or "none"
            what = f"backend {backend!r} {where}".strip()
            raise ParameterError(f"unknown {what}: choose one of {known}")
        found = launchers[backend]
        return load(found) if isinstance(found, str) else found

    def _slurm_options(self, profile: str | None) -> SlurmOptions:
        """The options of SLURM profile ``profile`` (None: SLURM's and labkit's defaults)."""
        return profile_options(profile, self.slurm_profiles)

    async def _probe(self, record: ClusterRecord) -> Health:
        launcher_class = self._launcher_class(record.backend)
        credentials = Credentials(token_file=record.token_file, tls=record.tls)
        address = (record.launcher and record.launcher.probe_address) or record.address
        return await probe_with(launcher_class, address, self.probe_timeout, credentials)

    async def _in_process_thread(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._process_thread, fn, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise UnsupportedOperationError("the Jupyter server is shutting down")

    def _check_workers(self, workers: object) -> int:
        return whole("'workers'", workers, 1, self.max_workers)

    def _taken_names(self) -> set[str]:
        names = {record.name for record in self._clusters.values()}
        return names | {entry.name for entry in self._others_in_registry()}

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str) or not NAME_PATTERN.match(name) or name == "local":
            raise ParameterError(
                f"cluster name {name!r} is not allowed: start with a letter, then letters, "
                "digits, '.', '_' or '-' (at most 64), and not 'local'"
            )
        if name in self._taken_names():
            raise ParameterError(f"a cluster named {name!r} already exists")
        return name

    def _new_name(self, backend: str) -> str:
        taken = self._taken_names() | self._owned
        number = 1
        while f"{backend}-{number}" in taken:
            number += 1
        return f"{backend}-{number}"

    def _registry_path(self) -> Path:
        return Path(self.registry_file) if self.registry_file else registry_path()

    def _others_in_registry(self) -> list[ClusterEntry]:
        """Entries other servers wrote: kept, unless they name processes that are gone."""
        try:
            entries = read_registry(self._registry_path())
        except RegistryError as exc:
            self.log.warning("labkit: ignoring the unreadable registry: %s", exc)
            return []
        return [
            entry
            for entry in entries
            if entry.id not in self._owned
            and (not entry.managed or any(pid_alive(pid) for pid in entry.pids))
        ]

    def _write_registry(self) -> None:
        ours = [
            ClusterEntry(
                id=record.id,
                name=record.name,
                backend=record.backend,
                address=record.address,
                dashboard_url=self._dashboard_url(record),
                managed=record.managed,
                pids=record.launcher.pids() if record.launcher else [],
                token_file=record.token_file,
                workers=record.requested,
                tls=record.tls,
            )
            for record in self._clusters.values()
        ]
        try:
            write_registry(self._others_in_registry() + ours, self._registry_path())
        except OSError as exc:
            raise RegistryError(f"cannot write the cluster registry: {exc}") from exc
