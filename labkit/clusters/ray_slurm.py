"""Ray on SLURM: one batch job per cluster, its first task the head, the others joining it.

This is Ray's documented SLURM pattern. The batch script ``srun``s this module once per task
(``python -m labkit.clusters.ray_slurm node``): task 0 starts ``ray start --head --block``,
waits until the head answers with the cluster's token and writes its address to
``head.json`` in the cluster's folder; every other task waits for that file and runs
``ray start --address HEAD --block``. Tasks may share a host (a small job on one node), so
each Ray node picks its own free ports (outside Ray's worker range 10002-19999) and keeps
its sessions in a short temp dir of its own, ``/tmp/labkit-ray-JOBID-TASK`` (Ray's Unix
sockets must stay under 107 bytes); on SIGTERM (``scancel``, walltime) a node stops every
process of its Ray node by PID, as ``ray start`` moves them out of SLURM's process group.

Token authentication is on: a random token made for the cluster, in a 0600 file in the
cluster's folder (under ``log_directory``, which the nodes must see), reaches the job as
``RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=...``; the notebook attaches through the head's
Ray Client server with the same token (``RayCluster.connect``'s remote path).

Ray joins nodes only on routable addresses: it replaces a loopback node address with the
host's routable one, so a loopback ``interface`` is refused rather than silently ignored.

``scale(n)`` is n Ray nodes: nodes beyond the cluster job's come as one-task join jobs, and
scaling down cancels those; the cluster job's own nodes are one SLURM allocation, which
cannot shrink, so going below ``jobs`` is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.clusters.address import Target, on_loopback
from labkit.clusters.credentials import Credentials
from labkit.clusters.ports import free_ports
from labkit.clusters.ray import RayCluster
from labkit.clusters.slurm import (
    JobState,
    SlurmOptions,
    cancel_jobs,
    check_request,
    job_states,
    submit_script,
)
from labkit.errors import ParameterError, SlurmError, UnsupportedOperationError

POLL_S = 0.5
HEAD_FILE = "head.json"
TOKEN_FILE = "auth_token"
START_ATTEMPTS = 2  # a busy node can miss Ray's fixed 30 s for a raylet to register
STOP_GRACE_S = 1.0  # SLURM's KillWait is often 5-30 s: stop the Ray node well inside it
# Ray rejects object stores under 75 MiB; a node keeps 30% of its memory for objects
OBJECT_STORE_SHARE, OBJECT_STORE_MIN = 0.3, 80 * 2**20


# -- the notebook side -------------------------------------------------------------------
def job_flags(options: SlurmOptions, tasks: int) -> list[str]:
    """The ``sbatch`` request of a job of ``tasks`` Ray nodes, each ``cores`` CPUs and
    ``memory`` (as ``--mem-per-cpu``, so tasks packed on one host each get theirs)."""
    megabytes = max(1, _bytes(options.memory) // 2**20)
    flags = [f"--ntasks={tasks}", f"--cpus-per-task={options.cores}"]
    flags += [f"--mem-per-cpu={max(1, megabytes // options.cores)}M", f"--time={options.walltime}"]
    flags += [f"--partition={options.partition}"] if options.partition else []
    flags += [f"--account={options.account}"] if options.account else []
    return flags + list(options.job_extra)


def _bytes(memory: str) -> int:
    from dask.utils import parse_bytes

    return int(parse_bytes(memory))


def new_cluster_folder(options: SlurmOptions) -> Path:
    """A folder of its own for one cluster (scripts, token, head address) in the log folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(tempfile.mkdtemp(prefix=f"ray-{stamp}-", dir=options.folder()))


def write_token(folder: Path) -> Path:
    """A fresh random token for one cluster, readable by its owner only."""
    path = folder / TOKEN_FILE
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32))
    return path


def batch_script(options: SlurmOptions, folder: Path, *, join: bool) -> str:
    """The batch script: SLURM's job runs ``srun`` once, one Ray node per task."""
    node = [sys.executable, "-m", "labkit.clusters.ray_slurm", "node", str(folder)]
    node += ["--cores", str(options.cores), "--memory", str(_bytes(options.memory))]
    node += ["--interface", options.interface] if options.interface else []
    node += ["--join"] if join else []
    # srun (since Slurm 22.05) no longer takes --cpus-per-task from the job's environment
    srun = ["srun", "--kill-on-bad-exit=1", f"--cpus-per-task={options.cores}"]
    lines = ["#!/bin/bash", *options.prologue]
    lines += [
        # the notebook's own Ray settings must not reach the nodes (sbatch exports them)
        "unset RAY_AUTH_TOKEN RAY_ADDRESS RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
        f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={shlex.quote(str(folder / TOKEN_FILE))}",
        "export RAY_USAGE_STATS_ENABLED=0",
        shlex.join(srun + node),
    ]
    return "\n".join(lines) + "\n"


def submit(options: SlurmOptions, folder: Path, tasks: int, *, join: bool) -> str:
    """Submit a job of ``tasks`` Ray nodes (a cluster, or nodes joining one); its job id."""
    name = "join" if join else "cluster"
    script = folder / f"{name}.sh"
    script.write_text(batch_script(options, folder, join=join))
    output = options.folder() / "labkit-ray-%j.out"  # ``output_tail`` finds *-JOBID.out
    flags = [f"--job-name=labkit-ray-{name}", f"--output={output}"]
    return submit_script(script, flags + job_flags(options, tasks))


def start_ray_on_slurm(
    options: SlurmOptions, timeout: float, release_previous: Callable[[], None]
) -> RaySlurmCluster:
    """Submit the cluster job, wait for its head, attach, and wait for ``jobs`` nodes."""
    if options.jobs < 1:
        raise ParameterError("a Ray cluster on SLURM needs jobs >= 1 (its first node is the head)")
    _refuse_loopback(options.interface)
    check_request(options, flags=job_flags(options, options.jobs))  # the old connection kept
    folder = new_cluster_folder(options)
    write_token(folder)
    job_id = submit(options, folder, options.jobs, join=False)
    watch = _Watch(options, [job_id])  # one clock for the head and the nodes
    cluster: RaySlurmCluster | None = None
    try:
        head = _wait_for_head(folder, watch)
        cluster = RaySlurmCluster.connect(
            Target("ray-client", "ray", head["client"]),
            workers=None,
            timeout=timeout,
            credentials=Credentials(token_file=str(folder / TOKEN_FILE)),
            release_previous=release_previous,
        )
        cluster.adopt(options, folder, job_id, head)
        cluster.wait_for_nodes(options.jobs, watch)
    except BaseException:  # refused, timed out, or Ctrl-C: no job stays queued
        if cluster is not None:
            cluster.close()
        else:
            cancel_jobs([job_id])
        raise
    return cluster


def _refuse_loopback(interface: str | None) -> None:
    address = interface_address(interface) if interface else None
    if address is not None and on_loopback(address):
        raise ParameterError(
            f"interface={interface!r} is loopback ({address}): Ray joins nodes only on a "
            "routable address; name an interface the nodes share (e.g. 'ib0', 'eth0')"
        )


def _wait_for_head(folder: Path, watch: _Watch) -> dict[str, str]:
    """The head's addresses, once the job wrote them; pending time does not count."""
    head_file = folder / HEAD_FILE
    with _bar(watch.options.jobs) as bar:
        while not head_file.exists():
            watch.check(0, bar, "its Ray head never answered")
            time.sleep(POLL_S)
    return json.loads(head_file.read_text())


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="SLURM Ray nodes", unit="node")


class _Watch:
    """``StartupWatch`` over the cluster's jobs, with a progress bar and Ray's wording."""

    def __init__(self, options: SlurmOptions, job_ids: list[str]):
        from labkit.clusters.dask_slurm import StartupWatch

        self.options = options
        self.job_ids = job_ids
        self.watch = StartupWatch(options.startup_timeout, "")

    def check(self, joined: int, bar: Any, what: str) -> list[JobState]:
        """Show ``joined`` nodes and the pending jobs; raise if a job ended or ran too long."""
        from labkit.clusters.dask_slurm import describe_problem

        states = list(job_states(self.job_ids).values())
        pending = [s for s in states if s.state == "PENDING"]
        reasons = ", ".join(sorted({s.reason for s in pending if s.reason}))
        bar.n = min(joined, bar.total)
        shown = f"{len(pending)} pending" + (f" ({reasons})" if reasons else "")
        bar.set_postfix_str(shown if pending else "", False)
        bar.refresh()
        problem = self.watch.problem(states, 0)  # "connected" is ours to judge: not yet
        if problem:
            state = problem[0]
            problem = (
                (state, "ended before its Ray nodes were up")
                if state.state == "ENDED"
                else (state, f"has run {self.options.startup_timeout:g} s and {what}")
            )
            raise SlurmError(describe_problem(problem, self.options), backend="ray")
        return states


class RaySlurmCluster(RayCluster):
    """A Ray cluster whose nodes are the tasks of SLURM jobs (``labkit.connect(on="slurm")``).

    ``workers()`` lists the Ray nodes; ``jobs()`` the SLURM jobs; ``close()`` cancels them.
    """

    options: SlurmOptions
    folder: Path
    job_id: str  # the cluster job: the head and the first ``jobs - 1`` nodes
    join_ids: list[str]  # one-node jobs added by ``scale``
    head: dict[str, str]

    def adopt(self, options: SlurmOptions, folder: Path, job_id: str, head: dict) -> None:
        """Make this attached client the owner of the SLURM jobs it was started with."""
        self.local = True  # labkit started it: scale() and close() act on its jobs
        self.options, self.folder, self.job_id, self.head = options, folder, job_id, head
        self.join_ids = []
        self.dashboard_url = head.get("dashboard") or self.dashboard_url

    def jobs(self) -> list[JobState]:
        """Each job of the cluster as SLURM reports it (pending ones with SLURM's reason)."""
        return list(job_states([self.job_id, *self.join_ids]).values())

    def wait_for_nodes(self, n: int, watch: _Watch | None = None) -> None:
        """Until ``n`` Ray nodes are alive; time a job spends pending does not count."""
        watch = watch or _Watch(self.options, [self.job_id, *self.join_ids])
        with _bar(n) as bar:
            while True:
                joined = len(self.workers())
                if joined >= n:
                    bar.n = n
                    bar.refresh()
                    return
                watch.check(joined, bar, f"only {joined} of {n} Ray nodes joined its head")
                time.sleep(POLL_S)

    def _scale(self, n: int) -> None:
        """``n`` Ray nodes; returns once the join jobs are submitted or cancelled."""
        base = self.options.jobs
        if n < base:
            raise UnsupportedOperationError(
                f"cannot scale the Ray cluster of SLURM job {self.job_id} to {n} node(s): its "
                f"first {base} nodes are one SLURM allocation, which cannot shrink; close() it "
                f"and connect with jobs={n}"
            )
        extra = n - base
        if extra < len(self.join_ids):
            cancel_jobs(self.join_ids[extra:])
            del self.join_ids[extra:]
        while len(self.join_ids) < extra:
            self.join_ids.append(submit(self.options, self.folder, 1, join=True))

    def summary(self) -> dict[str, Any]:
        info = super().summary()
        info["jobs"] = [state.to_json() for state in self.jobs()]
        return info

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            cancel_jobs([self.job_id, *self.join_ids])
            (self.folder / TOKEN_FILE).unlink(missing_ok=True)  # it opened nothing else


# -- the node side: one task of the job ---------------------------------------------------
def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name`` on this host, None if it has none."""
    import psutil

    for address in psutil.net_if_addrs().get(name, []):
        if address.family == socket.AF_INET:
            return address.address
    return None


def node_address(interface: str | None) -> str:
    """This node's address for Ray: ``interface``'s, else the node's name as resolved, else
    the address of the route out (when the name resolves to loopback, as Debian's does)."""
    if interface:
        found = interface_address(interface)
        if found is None:
            raise SystemExit(f"labkit: no IPv4 address on interface {interface!r} on this node")
        if on_loopback(found):
            raise SystemExit(
                f"labkit: interface {interface!r} is loopback; Ray needs a routable one"
            )
        return found
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    with contextlib.suppress(OSError):
        found = socket.gethostbyname(name)
        if not on_loopback(found):
            return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        return probe.getsockname()[0]


def node_temp_dir(job_id: str, task: str) -> str:
    """A fresh ``/tmp/labkit-ray-JOBID-TASK-XXXXXXXX`` (or under a short ``$TMPDIR``): Ray's
    socket paths under it must stay within 107 bytes. Job ids repeat across SLURM
    installations sharing a host, hence the random tail."""
    parent = tempfile.gettempdir()
    if len(parent) > len("/tmp/labkit"):
        parent = "/tmp"
    return tempfile.mkdtemp(prefix=f"labkit-ray-{job_id}-{task}-", dir=parent)


def ray_command() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else "ray"


@dataclass
class _Node:
    """One Ray node of this task: its ``ray start`` process, temp dir and addresses."""

    ray: subprocess.Popen
    temp_dir: str
    addresses: dict[str, str]


def run_node(argv: list[str]) -> int:
    """One task of a Ray-on-SLURM job: start (or join) a Ray node and stay with it."""
    parser = argparse.ArgumentParser(prog="python -m labkit.clusters.ray_slurm node")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cores", type=int, required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--interface")
    parser.add_argument("--join", action="store_true")
    args = parser.parse_args(argv)
    job_id = os.environ.get("SLURM_JOB_ID", str(os.getpid()))
    task = os.environ.get("SLURM_PROCID", "0")
    head = task == "0" and not args.join
    ip = node_address(args.interface)
    gcs = None if head else _head_address(args.folder)["gcs"]
    stopper = _Stopper()
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            node = _start_node(args, job_id, task, ip, gcs)
            stopper.node = node
            if _node_up(node, args.folder / TOKEN_FILE if head else None):
                break
            _print_ray_logs(node.temp_dir)
            code = node.ray.wait()
            stopper.stop()
            again = "; starting it again" if attempt < START_ATTEMPTS else ""
            print(f"labkit: the Ray node stopped (exit {code}) before it was up{again}", flush=True)
        else:
            return 1
        if head:
            tmp = args.folder / f".{HEAD_FILE}.tmp"
            tmp.write_text(json.dumps(node.addresses | {"job_id": job_id}))
            os.replace(tmp, args.folder / HEAD_FILE)
            print(f"labkit: Ray head answers at {node.addresses['client']}", flush=True)
        code = node.ray.wait()
        if stopper.stopping:
            return 0
        _print_ray_logs(node.temp_dir)
        return code
    finally:
        stopper.stop()


def _start_node(
    args: argparse.Namespace, job_id: str, task: str, ip: str, gcs: str | None
) -> _Node:
    """``ray start --block``: the head when ``gcs`` is None, else a node joining it."""
    temp_dir = node_temp_dir(job_id, task)
    store = max(OBJECT_STORE_MIN, int(args.memory * OBJECT_STORE_SHARE))
    command = [ray_command(), "start", "--block", "--node-ip-address", ip, "--temp-dir", temp_dir]
    command += ["--num-cpus", str(args.cores), "--disable-usage-stats"]
    command += ["--memory", str(max(args.memory - store, 2**20))]
    command += ["--object-store-memory", str(store)]
    names = ["--node-manager-port", "--object-manager-port", "--metrics-export-port"]
    names += ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
    names += ["--runtime-env-agent-port"]
    if gcs is None:
        names += ["--port", "--ray-client-server-port", "--dashboard-port"]
        command += ["--head", "--dashboard-host", ip]
    else:
        command += ["--address", gcs]
    ports = dict(zip(names, free_ports(len(names), ip), strict=True))
    for name, port in ports.items():
        command += [name, str(port)]
    addresses = {}
    if gcs is None:
        addresses = {
            "gcs": f"{ip}:{ports['--port']}",
            "client": f"ray://{ip}:{ports['--ray-client-server-port']}",
            "dashboard": f"http://{ip}:{ports['--dashboard-port']}",
        }
    print(f"labkit: task {task} of job {job_id}: Ray node at {ip} ({temp_dir})", flush=True)
    return _Node(subprocess.Popen(command), temp_dir, addresses)


def _print_ray_logs(temp_dir: str, lines: int = 8) -> None:
    """The end of the Ray node's own logs, into the job's output: why it stopped."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"):
        path = logs / name
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"labkit: the end of {path}:", *tail, sep="\n", flush=True)


def _head_address(folder: Path) -> dict[str, str]:
    """The head's addresses, once its task wrote them (the job's own walltime bounds this)."""
    path = folder / HEAD_FILE
    while not path.exists():
        time.sleep(POLL_S)
    return json.loads(path.read_text())


def _node_up(node: _Node, token_path: Path | None) -> bool:
    """Whether the node came up (False: ``ray start`` died first): it has written the
    cluster's address (its raylet registered) and, on the head (``token_path``), the GCS
    and Ray Client server accept the token. The other nodes join only then, so they do not
    compete with the head's own start (Ray gives a raylet 30 s to register)."""
    from labkit.clusters.ray_auth import RayToken, check_access
    from labkit.errors import ConnectError

    started = Path(node.temp_dir) / "ray_current_cluster"
    while not started.exists():
        if node.ray.poll() is not None:
            return False
        time.sleep(POLL_S)
    if token_path is None:
        return True
    token = RayToken(token_path.read_text().strip(), str(token_path), token_path)
    for address, client in ((node.addresses["gcs"], False), (node.addresses["client"], True)):
        while True:
            if node.ray.poll() is not None:
                return False
            try:
                check_access(address, client, token, 2)
                break
            except ConnectError:
                time.sleep(POLL_S)
    return True


class _Stopper:
    """Stops the task's Ray node on SIGTERM/SIGINT (``scancel``, walltime) and when the task
    ends. ``ray start`` makes its own process group, out of SLURM's reach, so its processes
    are stopped here by PID: the ``ray start`` tree, and anything whose command line names
    the node's temp dir; then the temp dir goes."""

    def __init__(self) -> None:
        self.node: _Node | None = None
        self.stopping = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True
        print(f"labkit: signal {signum}: stopping the Ray node", flush=True)
        for other in (signal.SIGTERM, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)
        self.stop()
        raise SystemExit(0)

    def stop(self) -> None:
        import shutil

        import psutil

        node, self.node = self.node, None
        if node is None:
            return
        procs = _node_processes(node.ray.pid, node.temp_dir)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=STOP_GRACE_S)
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def _node_processes(root: int, temp_dir: str) -> list:
    """``root`` and its descendants, and every process whose command line names ``temp_dir``."""
    import psutil

    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        top = psutil.Process(root)
        found[root] = top
        found.update({child.pid: child for child in top.children(recursive=True)})
    for proc in psutil.process_iter(["cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or ()):
            found.setdefault(proc.pid, proc)
    found.pop(os.getpid(), None)
    return list(found.values())


def main(argv: list[str]) -> int:
    if argv[:1] != ["node"]:
        print("usage: python -m labkit.clusters.ray_slurm node FOLDER --cores N --memory BYTES")
        return 2
    return run_node(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
