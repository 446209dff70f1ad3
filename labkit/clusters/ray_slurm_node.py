"""What each task of a Ray-on-SLURM job runs (``python -m labkit.clusters.ray_slurm_node``).

Task 0 starts ``ray start --head --block``, waits until the head answers with the cluster's
token and writes its address to ``head.json`` in the cluster's folder; every other task waits
for that file and runs ``ray start --address HEAD --block``. Tasks may share a host, so each
Ray node picks its own free ports (outside Ray's worker range) and keeps its sessions in a
short temp dir of its own (Ray's Unix sockets must stay under 107 bytes); on SIGTERM
(``scancel``, walltime) a node stops every process of its Ray node by PID, as ``ray start``
moves them out of SLURM's process group. The notebook's side is ``labkit.clusters.ray_slurm``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from labkit.clusters.address import on_loopback
from labkit.clusters.ports import free_ports
from labkit.clusters.ray_processes import ray_process_env

POLL_S = 0.5
HEAD_FILE = "head.json"
TOKEN_FILE = "auth_token"
START_ATTEMPTS = 2  # a busy node can miss Ray's fixed 30 s for a raylet to register
STOP_GRACE_S = 1.0  # SLURM's KillWait is often 5-30 s: stop the Ray node well inside it
# Ray rejects object stores under 75 MiB; a node keeps 30% of its memory for objects
OBJECT_STORE_SHARE, OBJECT_STORE_MIN = 0.3, 80 * 2**20


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
    parser = argparse.ArgumentParser(prog="python -m labkit.clusters.ray_slurm_node node")
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
    return _Node(subprocess.Popen(command, env=ray_process_env()), temp_dir, addresses)


def _print_ray_logs(temp_dir: str, lines: int = 8) -> None:
    """The end of the Ray node's own logs, into the job's output: why it stopped."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    for name in ("raylet.out", "raylet.err", "gcs_server.out", "gcs_server.err"):
        path = logs / name
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                print(f"labkit: the end of {path}:", *tail, sep="\n", flush=True)


def print_client_server_errors(temp_dir: str, lines: int = 12, file: TextIO | None = None) -> None:
    """The end of each Ray Client server's error log that has one, into the job's output (or
    ``file``): a server that died as a notebook attached says why only there (the temp dir
    goes with the node). A crash that Python's faulthandler reported (PYTHONFAULTHANDLER) is
    shown from its first line, where it names the signal."""
    logs = Path(temp_dir) / "session_latest" / "logs"
    for path in sorted(logs.glob("ray_client_server*.err")):
        with contextlib.suppress(OSError):
            said = path.read_text(errors="replace").splitlines()
            crash = [i for i, line in enumerate(said) if line.startswith("Fatal Python error")]
            shown = said[crash[0] : crash[0] + lines] if crash else said[-lines:]
            if crash or any("Error" in line or "Traceback" in line for line in shown):
                print(f"labkit: the log {path}:", *shown, sep="\n", flush=True, file=file)


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
        print_client_server_errors(node.temp_dir)  # first: SLURM kills the task soon after
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
        print(
            "usage: python -m labkit.clusters.ray_slurm_node node FOLDER --cores N --memory BYTES"
        )
        return 2
    return run_node(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
