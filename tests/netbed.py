"""A multi-host test bed on one machine: Linux network namespaces as hosts.

Each host is a network namespace with its own stack: loopback and one veth link with an address
in 198.18.0.0/24 (198.18.0.0/15 is reserved for such test beds; nothing else gets an address).
The links meet on a bridge that lives in a namespace of its own, so the machine's own network
is never touched and two beds never see each other. Processes started on a host run under
``ip netns exec`` (which execs, so the PID is the process's own) and are stopped by PID;
``down()`` stops them, then deletes every namespace it made (which deletes their links).

Needs root. By hand::

    python -m tests.netbed up 3      # prints the namespaces and addresses, then waits
    # another shell: ip netns exec <name> ...       Ctrl-C removes everything
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import group_alive, stop_process, wait_for

SUBNET = "198.18.0"


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")


@dataclass
class Host:
    name: str  # a label such as "head"
    namespace: str
    address: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]

    def start(self, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start ``args`` on this host in its own process group, output to ``log``."""
        proc = subprocess.Popen(
            self.command(args),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], timeout: float, env: dict | None = None):
        """Run ``args`` on this host to completion (bounded by ``timeout``)."""
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, env=env
        )

    def stop(self, proc: subprocess.Popen, timeout: float = 30) -> None:
        """Stop ``proc`` (SIGTERM, then SIGKILL) and whatever is left of its process group."""
        stop_process(proc, timeout)
        if proc in self.procs:
            self.procs.remove(proc)

    def kill(self, proc: subprocess.Popen) -> None:
        """Lose this process as a host loses power: SIGKILL to its whole group at once."""
        _kill_group(proc, 30)
        self.procs.remove(proc)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True)
        return [int(pid) for pid in out.stdout.split()]


def _kill_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGKILL to ``proc``'s process group; returns once the leader is reaped and none is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout)  # a dead leader stays in its group until reaped
    wait_for(lambda: not group_alive(proc.pid), timeout, f"process group {proc.pid}")


class NetBed:
    """``hosts`` namespaces on one bridge; use as a context manager (``down`` always runs)."""

    def __init__(self, names: list[str], tag: str | None = None):
        self.tag = tag or f"lk{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        self.hosts = {
            name: Host(name, f"{self.tag}-{name}", f"{SUBNET}.{i + 1}")
            for i, name in enumerate(names)
        }
        self.namespaces: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def up(self) -> NetBed:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts.values()):
            self._add_namespace(host.namespace)
            _ip("-n", host.namespace, "link", "set", "lo", "up")
            inside, outside = "eth0", f"p{i}"
            _ip(
                "link", "add", f"{self.tag}h{i}", "netns", host.namespace, "type", "veth",
                "peer", "name", f"{self.tag}s{i}", "netns", self.switch,
            )  # fmt: skip
            _ip("-n", host.namespace, "link", "set", f"{self.tag}h{i}", "name", inside)
            _ip("-n", self.switch, "link", "set", f"{self.tag}s{i}", "name", outside)
            _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", inside)
            _ip("-n", host.namespace, "link", "set", inside, "up")
            _ip("-n", self.switch, "link", "set", outside, "master", "br0")
            _ip("-n", self.switch, "link", "set", outside, "up")
        return self

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self.namespaces.append(name)

    def link(self, host: str, up: bool) -> None:
        """Take a host's link down (a pulled cable) or up again."""
        index = list(self.hosts).index(host)
        _ip("-n", self.switch, "link", "set", f"p{index}", "up" if up else "down")

    def down(self) -> None:
        """Stop every process started on a host, by PID; then delete the namespaces."""
        for host in self.hosts.values():
            for proc in list(host.procs):
                host.stop(proc)
            for pid in host.pids():  # anything else that ran in it (a test's client, say)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.namespaces.clear()

    def __enter__(self) -> NetBed:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc: object) -> None:
        self.down()


@contextlib.contextmanager
def routable_address(
    address: str = "198.19.254.1", name: str = "lkhost0"
) -> Iterator[tuple[str, str]]:
    """A test-bed address of this host's own stack, for a service that refuses loopback but
    whose nodes all run here (Ray joins nodes only on a routable address): a veth pair whose
    end ``name`` holds ``address``/32. Yields (interface, address); the pair is deleted on the
    way out, also when the block fails. Needs root."""
    peer = f"{name}p"
    _ip("link", "add", name, "type", "veth", "peer", "name", peer)
    try:
        _ip("addr", "add", f"{address}/32", "dev", name)
        _ip("link", "set", name, "up")
        _ip("link", "set", peer, "up")
        yield name, address
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def main() -> None:
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if sys.argv[1:2] != ["up"]:
        raise SystemExit("usage: python -m tests.netbed up [HOSTS]")
    with NetBed([f"host{i + 1}" for i in range(count)]) as bed:
        for host in bed.hosts.values():
            print(f"{host.namespace}\t{host.address}")
        print("Ctrl-C removes the namespaces", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
