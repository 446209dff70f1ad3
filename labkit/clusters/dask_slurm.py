"""Dask on SLURM: dask-jobqueue's ``SLURMCluster``, one SLURM job per Dask worker.

The scheduler runs in this process (as dask-jobqueue does it) with mutual TLS on temporary
certificates that the jobs read from the log folder (the login node's network is shared with
every user of the system; the dashboard listens on loopback only). labkit waits
for the workers honestly: a pending job is pending (with SLURM's reason), and only a job that
runs but whose worker never connects fails, after ``startup_timeout``, naming the job and the
end of its output. ``scale(n)`` is n jobs; ``close()`` cancels them all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from labkit.clusters.dask import DaskCluster
from labkit.clusters.slurm import JobState, SlurmOptions, job_states, output_tail
from labkit.errors import SlurmError

POLL_S = 0.5


def slurm_cluster_class() -> type:
    """dask-jobqueue's ``SLURMCluster``, imported without its side effect: importing
    dask_jobqueue (0.9) sets a SIGINT handler that exits the process, meant for its batch
    runner scripts. In a kernel that would turn an interrupt into SystemExit, and in the
    Jupyter server's worker threads the import fails outright (signals are the main
    thread's), so the caller's handler stays as it was."""
    import signal

    set_handler = signal.signal
    signal.signal = lambda *args: None  # type: ignore[assignment]
    try:
        from dask_jobqueue import SLURMCluster
    finally:
        signal.signal = set_handler
    return SLURMCluster


def new_jobqueue(options: SlurmOptions, security: Any = True) -> Any:
    """dask-jobqueue's ``SLURMCluster`` for ``options``, no job submitted yet: the scheduler in
    this process, with mutual TLS (``security``: a ``distributed.Security`` whose files the
    nodes see, or True for temporary certificates written to the log folder)."""
    SLURMCluster = slurm_cluster_class()
    folder = options.folder()
    return SLURMCluster(
        cores=options.cores,
        processes=1,
        memory=options.memory,
        walltime=options.walltime,
        queue=options.partition,
        account=options.account,
        job_extra_directives=list(options.job_extra),
        job_script_prologue=list(options.prologue),
        interface=options.interface,
        log_directory=str(folder),
        shared_temp_directory=str(folder),
        security=security,
        # the dashboard on loopback: Jupyter's proxy serves it to the notebook's user only
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )


def start_dask_on_slurm(options: SlurmOptions, timeout: float) -> SlurmDaskCluster:
    """Submit ``options.jobs`` worker jobs and wait until their workers connect."""
    from distributed import Client

    jobqueue = new_jobqueue(options)
    cluster = SlurmDaskCluster(
        Client(jobqueue, timeout=timeout), local_cluster=jobqueue, timeout=timeout
    )
    cluster.options = options
    try:
        if options.jobs:
            jobqueue.scale(jobs=options.jobs)
            cluster.wait_for_workers(options.jobs)
    except BaseException:  # refused, timed out, or Ctrl-C: no job stays queued
        cluster.close()
        raise
    return cluster


class StartupWatch:
    """Whether a SLURM cluster has gone wrong: a job ended (before its worker connected, or
    later: cancelled, at its walltime...), or has run ``startup_timeout`` seconds while fewer
    workers than running jobs connected. Time a job spends pending in the queue does not
    count."""

    def __init__(self, startup_timeout: float, address: str):
        self.startup_timeout = startup_timeout
        self.address = address
        self.running_since: dict[str, float] = {}
        self.connected_once = False

    def problem(self, states: list[JobState], connected: int) -> tuple[JobState, str] | None:
        """The job at fault and what it did, or None while all is well."""
        now = time.monotonic()
        self.connected_once = self.connected_once or connected > 0
        for state in states:
            if state.state == "RUNNING":
                self.running_since.setdefault(state.job_id, now)
            if state.state == "ENDED":
                before = "" if self.connected_once else " before its worker connected"
                return state, f"{state.ending()}{before}"
        running = [s for s in states if s.job_id in self.running_since]
        if connected >= len(running):
            return None
        for state in running:
            if now - self.running_since[state.job_id] > self.startup_timeout:
                return state, (
                    f"has run {self.startup_timeout:g} s and its worker never connected to "
                    f"{self.address}"
                )
        return None


def describe_problem(problem: tuple[JobState, str], options: SlurmOptions) -> str:
    """The message for ``StartupWatch.problem``: the job, what it did, the end of its output."""
    state, what = problem
    return f"SLURM job {state.job_id} {what}; the end of its output:\n" + output_tail(
        options.folder(), state.job_id
    )


def jobqueue_jobs(jobqueue: Any) -> list[JobState]:
    """The SLURM jobs of a ``SLURMCluster`` as SLURM reports them."""
    ids = [str(job.job_id) for job in list(jobqueue.workers.values()) if job.job_id]
    return list(job_states(ids).values())


class SlurmDaskCluster(DaskCluster):
    """A Dask cluster whose workers are SLURM jobs (``labkit.connect(on="slurm")``)."""

    options: SlurmOptions

    def jobs(self) -> list[JobState]:
        """Each job of the cluster as SLURM reports it (pending ones with SLURM's reason)."""
        return jobqueue_jobs(self.local_cluster)

    def wait_for_workers(self, n: int) -> None:
        """Until ``n`` workers are connected; time a job spends pending does not count."""
        from tqdm.auto import tqdm

        watch = StartupWatch(self.options.startup_timeout, self.address)
        with tqdm(total=n, desc="SLURM workers", unit="worker") as bar:
            while True:
                connected = len(self._worker_info())
                bar.n = min(connected, n)
                states = self.jobs()
                pending = [s for s in states if s.state == "PENDING"]
                reasons = sorted({s.reason for s in pending if s.reason})
                bar.set_postfix_str(
                    f"{len(pending)} pending ({', '.join(reasons)})" if pending else "", False
                )
                bar.refresh()
                if connected >= n:
                    return
                problem = watch.problem(states, connected)
                if problem:
                    raise SlurmError(
                        describe_problem(problem, self.options),
                        address=self.address,
                        backend="dask",
                    )
                time.sleep(POLL_S)

    def _scale(self, n: int) -> None:
        """``n`` jobs; returns once submitted (``jobs()`` shows them pending or running)."""
        self.local_cluster.scale(jobs=n)

    def summary(self) -> dict[str, Any]:
        info = super().summary()
        info["jobs"] = [state.to_json() for state in self.jobs()]
        return info
