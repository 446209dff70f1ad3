"""Ray on SLURM: one batch job per cluster, its first task the head, the others joining it.

This is Ray's documented SLURM pattern. The batch script ``srun``s one Ray node per task
(``labkit.clusters.ray_slurm_node``: ports, temp dirs, the head's address file, stopping on
``scancel``); this module is the notebook's side: submit, wait honestly, attach, scale, close.

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

import json
import os
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.clusters.address import Target, on_loopback
from labkit.clusters.credentials import Credentials
from labkit.clusters.ray import RayCluster
from labkit.clusters.ray_slurm_node import HEAD_FILE, POLL_S, TOKEN_FILE, interface_address
from labkit.clusters.slurm import (
    JobState,
    SlurmOptions,
    cancel_jobs,
    check_request,
    job_states,
    submit_script,
)
from labkit.errors import ParameterError, SlurmError, UnsupportedOperationError


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
    node = [sys.executable, "-m", "labkit.clusters.ray_slurm_node", "node", str(folder)]
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


class RaySlurmJobs:
    """The SLURM jobs of one Ray cluster: the cluster job (the head and the first ``jobs - 1``
    nodes, one allocation) and the one-node join jobs ``scale`` adds. Shared by the
    notebook's ``RaySlurmCluster`` and the sidebar's launcher."""

    def __init__(self, options: SlurmOptions, folder: Path, job_id: str):
        self.options, self.folder, self.job_id = options, folder, job_id
        self.join_ids: list[str] = []

    @classmethod
    def submit(cls, options: SlurmOptions) -> RaySlurmJobs:
        """Check the request with SLURM, make the cluster's folder and token, submit its job."""
        if options.jobs < 1:
            raise ParameterError(
                "a Ray cluster on SLURM needs jobs >= 1 (its first node is the head)"
            )
        _refuse_loopback(options.interface)
        check_request(options, flags=job_flags(options, options.jobs))
        folder = new_cluster_folder(options)
        write_token(folder)
        return cls(options, folder, submit(options, folder, options.jobs, join=False))

    @property
    def ids(self) -> list[str]:
        return [self.job_id, *self.join_ids]

    @property
    def token_file(self) -> Path:
        return self.folder / TOKEN_FILE

    def head(self) -> dict[str, str] | None:
        """The head's addresses once its task wrote them (gcs, client, dashboard)."""
        try:
            return json.loads((self.folder / HEAD_FILE).read_text())
        except FileNotFoundError:
            return None

    def states(self) -> list[JobState]:
        """Each job as SLURM reports it (pending ones with SLURM's reason)."""
        return list(job_states(self.ids).values())

    def scale(self, n: int) -> None:
        """``n`` Ray nodes: join jobs submitted or cancelled; below the cluster job's refused."""
        base = self.options.jobs
        if n < base:
            raise UnsupportedOperationError(
                f"cannot scale the Ray cluster of SLURM job {self.job_id} to {n} node(s): its "
                f"first {base} nodes are one SLURM allocation, which cannot shrink; close it "
                f"and start one with {n} node(s)"
            )
        extra = n - base
        if extra < len(self.join_ids):
            cancel_jobs(self.join_ids[extra:])
            del self.join_ids[extra:]
        while len(self.join_ids) < extra:
            self.join_ids.append(submit(self.options, self.folder, 1, join=True))

    def cancel(self) -> None:
        """Cancel every job and remove the token (the nodes stop their Ray on ``scancel``)."""
        try:
            cancel_jobs(self.ids)
        finally:
            self.token_file.unlink(missing_ok=True)


def start_ray_on_slurm(
    options: SlurmOptions, timeout: float, release_previous: Callable[[], None]
) -> RaySlurmCluster:
    """Submit the cluster job, wait for its head, attach, and wait for ``jobs`` nodes."""
    jobs = RaySlurmJobs.submit(options)  # SLURM's refusal first: the old connection kept
    watch = _Watch(options, [jobs.job_id])  # one clock for the head and the nodes
    cluster: RaySlurmCluster | None = None
    try:
        head = _wait_for_head(jobs, watch)
        cluster = RaySlurmCluster.connect(
            Target("ray-client", "ray", head["client"]),
            workers=None,
            timeout=timeout,
            credentials=Credentials(token_file=str(jobs.token_file)),
            release_previous=release_previous,
        )
        cluster.adopt(jobs, head)
        cluster.wait_for_nodes(options.jobs, watch)
    except BaseException:  # refused, timed out, or Ctrl-C: no job stays queued
        if cluster is not None:
            cluster.close()
        else:
            jobs.cancel()
        raise
    return cluster


def _refuse_loopback(interface: str | None) -> None:
    address = interface_address(interface) if interface else None
    if address is not None and on_loopback(address):
        raise ParameterError(
            f"interface={interface!r} is loopback ({address}): Ray joins nodes only on a "
            "routable address; name an interface the nodes share (e.g. 'ib0', 'eth0')"
        )


def _wait_for_head(jobs: RaySlurmJobs, watch: _Watch) -> dict[str, str]:
    """The head's addresses, once the job wrote them; pending time does not count."""
    with _bar(watch.options.jobs) as bar:
        while (head := jobs.head()) is None:
            watch.check(0, bar, "its Ray head never answered")
            time.sleep(POLL_S)
    return head


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

    slurm: RaySlurmJobs
    head: dict[str, str]

    def adopt(self, jobs: RaySlurmJobs, head: dict) -> None:
        """Make this attached client the owner of the SLURM jobs it was started with."""
        self.local = True  # labkit started it: scale() and close() act on its jobs
        self.slurm, self.head = jobs, head
        self.dashboard_url = head.get("dashboard") or self.dashboard_url

    @property
    def options(self) -> SlurmOptions:
        return self.slurm.options

    @property
    def folder(self) -> Path:
        return self.slurm.folder

    @property
    def job_id(self) -> str:
        """The cluster job: the head and the first ``jobs - 1`` nodes."""
        return self.slurm.job_id

    def jobs(self) -> list[JobState]:
        """Each job of the cluster as SLURM reports it (pending ones with SLURM's reason)."""
        return self.slurm.states()

    def wait_for_nodes(self, n: int, watch: _Watch | None = None) -> None:
        """Until ``n`` Ray nodes are alive; time a job spends pending does not count."""
        watch = watch or _Watch(self.options, self.slurm.ids)
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
        self.slurm.scale(n)

    def summary(self) -> dict[str, Any]:
        info = super().summary()
        info["jobs"] = [state.to_json() for state in self.jobs()]
        return info

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self.slurm.cancel()
