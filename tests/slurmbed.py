"""A real single-node SLURM cluster on loopback, for tests and benchmarks (root only).

``munged`` (as user munge, with its socket in our own folder), ``slurmctld`` and ``slurmd``
run in the foreground from a ``slurm.conf`` written under a temporary folder; ``SLURM_CONF``
points the SLURM commands (and labkit) at it, so /etc/slurm is never read or touched. On the
way out every job is cancelled, then each daemon is stopped by its PID.

By hand: ``sudo .venv/bin/python -m tests.slurmbed`` starts one and prints the ``export`` line
to use it from another shell; Ctrl-C stops it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.conftest import free_ports, stop_process

MUNGE_KEY = Path("/etc/munge/munge.key")  # made by Debian's munge package


@dataclass
class SlurmBed:
    folder: Path
    conf: Path
    node: str
    cpus: int
    memory_mb: int
    processes: list[subprocess.Popen]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=self.env)

    def jobs(self) -> list[str]:
        out = self.run("squeue", "--noheader", "--format=%i")
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def stop_controller(self) -> None:
        """Stop slurmctld by its PID (the jobs run on; SLURM's commands fail meanwhile)."""
        stop_process(self.processes[1])

    def start_controller(self) -> None:
        """Start slurmctld again on its saved state: the jobs it knew come back."""
        log = self.folder / "slurmctld.out"
        self.processes[1] = subprocess.Popen(
            ["slurmctld", "-D", "-f", str(self.conf)],
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        logs = [self.folder / "slurmctld.log"]
        _wait(lambda: self.run("squeue").returncode == 0, 60, "slurmctld again", logs)


def available() -> bool:
    return os.geteuid() == 0 and all(
        shutil.which(tool) for tool in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")
    )


def _node_facts() -> tuple[int, int]:
    """CPUs and memory (MB) as slurmd sees this machine; the node may not claim more."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    facts = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return int(facts["CPUs"]), int(facts["RealMemory"])


def _config(folder: Path, node: str, cpus: int, memory_mb: int) -> str:
    ctld_port, slurmd_port = free_ports(2)
    return f"""\
ClusterName=labkit-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
PartitionName=small Nodes={node} MaxTime=00:05:00 MaxNodes=1 State=UP
"""


def _wait(condition, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"{log}:\n{log.read_text()[-1500:]}" for log in logs if log.exists())
            raise TimeoutError(f"{what} not ready within {timeout} s\n{tails}")
        time.sleep(0.2)


@contextmanager
def slurm_bed() -> Iterator[SlurmBed]:
    """Start munged, slurmctld and slurmd; yield the bed; cancel every job and stop them."""
    folder = Path(tempfile.mkdtemp(prefix="labkit-slurm-"))
    folder.chmod(0o755)  # munged runs as user munge and must reach its folder
    munge = pwd.getpwnam("munge")
    (folder / "munge").mkdir()
    os.chown(folder / "munge", munge.pw_uid, munge.pw_gid)
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    cpus, memory_mb = _node_facts()
    memory_mb = min(memory_mb, 8192)  # what jobs may ask for in all
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, node, cpus, memory_mb))
    bed = SlurmBed(folder, conf, node, cpus, memory_mb, [])
    env = bed.env
    try:
        munged = subprocess.Popen(
            ["runuser", "-u", "munge", "--", "munged", "--foreground", "--force",
             f"--socket={folder}/munge/munge.socket", f"--key-file={MUNGE_KEY}",
             f"--pid-file={folder}/munge/munged.pid", f"--log-file={folder}/munge/munged.log",
             f"--seed-file={folder}/munge/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        bed.processes.append(munged)
        _wait(lambda: (folder / "munge" / "munge.socket").exists(), 30, "munged", [])
        for daemon in ("slurmctld", "slurmd"):
            log = folder / f"{daemon}.out"
            bed.processes.append(
                subprocess.Popen(
                    [daemon, "-D", "-f", str(conf)],
                    stdout=log.open("w"),
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        logs = [folder / "slurmctld.log", folder / "slurmd.log"]

        def idle() -> bool:
            out = bed.run("sinfo", "--noheader", "--format=%t", "--partition=debug")
            return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

        _wait(idle, 60, "the SLURM node", logs)
        yield bed
    finally:
        if any(proc.poll() is None for proc in bed.processes[1:]):
            bed.run("scancel", "--full", f"--user={pwd.getpwuid(os.geteuid()).pw_name}")
            deadline = time.monotonic() + 60
            while bed.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in reversed(bed.processes):
            stop_process(proc)
        shutil.rmtree(folder, ignore_errors=True)


def ray_node_dirs(folder: Path, job_id: str) -> list[str]:
    """The temp dirs of the job's Ray nodes, as its tasks printed them."""
    output = (folder / f"labkit-ray-{job_id}.out").read_text()
    return re.findall(r"Ray node at \S+ \((/\S+)\)", output)


def ray_node_processes(dirs: list[str]) -> list[psutil.Process]:
    """Processes of the job's Ray nodes, found by their temp dirs."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(d in part for part in proc.info["cmdline"] or () for d in dirs):
            found.append(proc)
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    """Kill what a test could not stop otherwise (a node its job left behind)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def main() -> None:
    with slurm_bed() as bed:
        print(f"export SLURM_CONF={bed.conf}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()  # until Ctrl-C


if __name__ == "__main__":
    main()
