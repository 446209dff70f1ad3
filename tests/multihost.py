"""Clusters on the namespace test bed (``tests/netbed.py``), for tests and benchmarks.

Hosts: ``head`` (Dask scheduler, Ray head), ``node1`` and ``node2`` (a Dask worker and a Ray
node each), ``laptop`` (the notebook side), ``outsider`` (someone else on the same network).
Dask runs with mutual TLS (or plain TCP, to compare), Ray with token auth. Every process runs
on its host and is stopped by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from labkit.clusters.ray_processes import ray_process_env
from tests.netbed import NetBed

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
HOSTS = ["head", "node1", "node2", "laptop", "outsider"]
NODES = ("node1", "node2")
DASK_TLS_PORT, DASK_TCP_PORT, RAY_PORT, RAY_CLIENT_PORT = 8786, 8796, 6379, 10001
CLIENT = ["-m", "tests.clusters.multinode_client"]
RAY_START_TRIES, RAY_JOIN_S = 3, 150  # a node that has not joined within is started again
RAY_NODE_PORTS = {
    "--dashboard-agent-listen-port": 52365,
    "--dashboard-agent-grpc-port": 52366,
    "--metrics-export-port": 52367,
    "--runtime-env-agent-port": 52368,
    "--node-manager-port": 52369,
    "--object-manager-port": 52370,
}


def last_json(log: Path) -> dict:
    """The JSON line a client started on a host printed last, from its log (stdout and stderr
    together: Ray's forwarded worker output may come after it)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"no JSON line in {log}:\n{log.read_text()[-3000:]}")
    return json.loads(lines[-1])


@dataclass
class Bed:
    net: NetBed
    work: Path
    certs: dict  # name -> TlsFiles: scheduler, worker, client; stranger (another CA)
    token_file: Path
    ray_temp_dirs: list[str] = field(default_factory=list)

    def __getitem__(self, host: str):
        return self.net[host]

    def dask_address(self, tls: bool = True) -> str:
        port = DASK_TLS_PORT if tls else DASK_TCP_PORT
        return f"{'tls' if tls else 'tcp'}://{self.net['head'].address}:{port}"

    @property
    def ray_address(self) -> str:
        return f"ray://{self.net['head'].address}:{RAY_CLIENT_PORT}"

    def env(self, tls: str | None = "client", token: bool = False) -> dict:
        """A notebook process's environment: the Dask TLS files ``tls`` in Dask's own
        configuration variables (or none), the Ray token's path or none (an empty home)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "DASK_"))}
        # a local Ray cluster started earlier in this process set Ray's single-node loopback
        # mode here ("0" refuses to join nodes); the bed's hosts are separate machines
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        env.update(HOME=str(self.work / "home"), PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0")
        if tls is not None:
            files = self.certs[tls]
            prefix = "DASK_DISTRIBUTED__COMM__TLS__"
            env[prefix + "CA_FILE"] = str(files.ca_file)
            env[prefix + "CLIENT__CERT"] = str(files.cert)
            env[prefix + "CLIENT__KEY"] = str(files.key)
        if token:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        return env

    def client(self, host: str, args: list[str], env: dict, timeout: float = 300) -> dict:
        """Run the notebook-side script (``multinode_client``) on ``host``; its JSON line."""
        out = self.net[host].run([sys.executable, *CLIENT, *args], timeout, env=env)
        if out.returncode != 0:
            errors = (
                out.stderr
                if len(out.stderr) < 6000
                else out.stderr[:3000] + "\n...\n" + out.stderr[-3000:]
            )
            output = out.stdout[-2000:] + errors
            raise AssertionError(f"client on {host} failed:\n{output}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    # -- Dask ---------------------------------------------------------------------------
    def start_dask_scheduler(self, tls: bool = True) -> None:
        head = self.net["head"]
        port = DASK_TLS_PORT if tls else DASK_TCP_PORT
        args = [str(BIN / "dask"), "scheduler", "--protocol", "tls" if tls else "tcp"]
        args += ["--host", head.address, "--port", str(port)]
        args += ["--dashboard-address", f"{head.address}:{port + 1}"]
        args += self.certs["scheduler"].dask_flags() if tls else []
        head.start(args, self.work / f"dask-scheduler-{port}.log")

    def start_dask_worker(
        self, host: str, tls: bool = True, hide: Path | None = None
    ) -> subprocess.Popen:
        """A Dask worker on ``host``; with ``hide``, that folder is empty for it (an empty
        tmpfs over it, in a mount namespace of its own): a host without the shared folder."""
        node = self.net[host]
        args = [str(BIN / "dask"), "worker", self.dask_address(tls), "--host", node.address]
        args += ["--nthreads", "1", "--nworkers", "1", "--memory-limit", "1GiB"]
        args += ["--dashboard-address", f"{node.address}:0"]
        args += self.certs["worker"].dask_flags() if tls else []
        if hide is not None:
            command = f"mount -t tmpfs labkit-hidden {shlex.quote(str(hide))} && exec "
            command += shlex.join(args)
            args = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
        return node.start(args, self.work / f"dask-worker-{host}-{'tls' if tls else 'tcp'}.log")

    def wait_for_dask(self, tls: bool = True, workers: int = 2) -> None:
        self.client("laptop", ["wait", self.dask_address(tls), str(workers)], self.env())

    # -- Ray ----------------------------------------------------------------------------
    def start_ray_node(self, host: str, head: bool = False) -> subprocess.Popen:
        from labkit.clusters.ray import new_ray_temp_dir

        env = ray_process_env(self.env(tls=None, token=True))
        env["RAY_AUTH_MODE"] = "token"
        # a busy 2-core machine starts slowly: the raylet waits for its agent's port file
        # (agent_register_timeout_ms) and `ray start` for the raylet, and each aborts after
        env["RAY_raylet_start_wait_time_s"] = "300"
        env["RAY_agent_register_timeout_ms"] = "300000"
        node = self.net[host]
        self.ray_temp_dirs.append(new_ray_temp_dir())
        args = [str(BIN / "ray"), "start", "--block", "--node-ip-address", node.address]
        args += ["--num-cpus", "1", "--temp-dir", self.ray_temp_dirs[-1], "--disable-usage-stats"]
        # fixed ports (each host has its own stack): a raylet otherwise waits for its agent to
        # report the ports it chose, and on a busy machine gives up and aborts
        for flag, port in RAY_NODE_PORTS.items():
            args += [flag, str(port)]
        if head:
            args += ["--head", "--port", str(RAY_PORT), "--ray-client-server-port"]
            args += [str(RAY_CLIENT_PORT), "--dashboard-host", node.address]
        else:
            args += ["--address", f"{self.net['head'].address}:{RAY_PORT}"]
        return node.start(args, self.work / f"ray-{host}.log", env)

    def start_ray_cluster(self) -> None:
        """A Ray head on ``head``, then a node on each of ``node1``/``node2``, token auth on."""
        self.start_ray_node_until_joined("head", 1)
        for joined, host in enumerate(NODES, start=2):  # one at a time: 2 cores for them all
            self.start_ray_node_until_joined(host, joined)

    def start_ray_node_until_joined(self, host: str, nodes: int) -> None:
        """Start the Ray node of ``host``; started again where the cluster does not reach
        ``nodes`` nodes: on a busy machine a raylet gives up waiting for its dashboard agent
        to write its port file (fixed ports or not) and aborts, and ``ray start --block``
        goes on waiting for it."""
        for attempt in range(1, RAY_START_TRIES + 1):
            proc = self.start_ray_node(host, head=host == "head")
            try:
                self.wait_for_ray(nodes, RAY_JOIN_S)
                return
            except AssertionError:
                if attempt == RAY_START_TRIES:
                    raise
                self.net[host].stop(proc)

    def ray_head_running(self) -> bool:
        """Whether the Ray head this bed started still runs (a test may have lost it)."""
        return any(
            Path(proc.args[4]).name == "ray" and proc.poll() is None
            for proc in self.net["head"].procs
        )

    def wait_for_ray(self, nodes: int, within: float = 240) -> None:
        args = ["wait", self.ray_address, str(nodes), "--token-file", str(self.token_file)]
        args += ["--wait-s", str(within)]
        self.client("laptop", args, self.env(tls=None), timeout=within + 60)

    def stop(self, program: str, hosts: tuple[str, ...] = ("head", *NODES)) -> None:
        """Stop, by PID, every ``program`` process (dask, ray) started on ``hosts``."""
        for host in hosts:
            for proc in list(self.net[host].procs):
                if Path(proc.args[4]).name == program:  # ip netns exec NS PROGRAM ...
                    self.net[host].stop(proc)
        if program == "ray":
            for path in self.ray_temp_dirs:
                shutil.rmtree(path, ignore_errors=True)
            self.ray_temp_dirs.clear()


@contextmanager
def namespace_bed(work: Path) -> Iterator[Bed]:
    """The namespaces, certificates (one CA for the cluster, another for a stranger) and a
    Ray token; everything stopped and removed on leaving."""
    from labkit.clusters.certificates import make_certificates

    (work / "home").mkdir(parents=True, exist_ok=True)
    with NetBed(HOSTS) as net:
        addresses = [host.address for host in net.hosts.values()]
        certs = make_certificates(work / "tls", addresses, ["scheduler", "worker", "client"])
        certs["stranger"] = make_certificates(work / "other-ca", addresses, ["client"])["client"]
        token_file = work / "ray_token"
        token_file.write_text(secrets.token_hex(32))
        token_file.chmod(0o600)
        bed = Bed(net, work, certs, token_file)
        try:
            yield bed
        finally:
            bed.stop("ray")  # the namespaces' teardown stops the rest by PID


@contextmanager
def dask_cluster(bed: Bed, tls: bool = True) -> Iterator[Bed]:
    """A Dask scheduler on ``head`` and a worker on each node."""
    try:
        bed.start_dask_scheduler(tls)
        for host in NODES:
            bed.start_dask_worker(host, tls)
        bed.wait_for_dask(tls)
        yield bed
    finally:
        bed.stop("dask")


@contextmanager
def ray_cluster(bed: Bed) -> Iterator[Bed]:
    """A Ray head on ``head`` and a node on each of ``node1``/``node2``, token auth on."""
    try:
        bed.start_ray_cluster()
        yield bed
    finally:
        bed.stop("ray")
