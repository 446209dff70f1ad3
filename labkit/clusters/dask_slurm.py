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


def start_dask_on_slurm(options: SlurmOptions, timeout: float) -> SlurmDaskCluster:
    """Submit ``options.jobs`` worker jobs and wait until their workers connect."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    folder = options.folder()
    jobqueue = SLURMCluster(
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
        security=True,  # temporary mutual-TLS certificates, written for the jobs to read
        # the dashboard on loopback: Jupyter's proxy serves it to the notebook's user only
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        silence_logs=logging.ERROR,
    )
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


class SlurmDaskCluster(DaskCluster):
    """A Dask cluster whose workers are SLURM jobs (``labkit.connect(on="slurm")``)."""

    options: SlurmOptions

    def jobs(self) -> list[JobState]:
        """Each job of the cluster as SLURM reports it (pending ones with SLURM's reason)."""
        ids = [str(job.job_id) for job in self.local_cluster.workers.values() if job.job_id]
        return list(job_states(ids).values())

    def wait_for_workers(self, n: int) -> None:
        """Until ``n`` workers are connected; time a job spends pending does not count."""
        from tqdm.auto import tqdm

        running_since: dict[str, float] = {}
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
                now = time.monotonic()
                for state in states:
                    if state.state == "RUNNING":
                        running_since.setdefault(state.job_id, now)
                    if state.state == "ENDED":
                        self._fail(state, "ended before its worker connected")
                late = [
                    j for j, t in running_since.items() if now - t > self.options.startup_timeout
                ]
                if late and connected < n:
                    state = next(s for s in states if s.job_id == late[0])
                    self._fail(
                        state,
                        f"has run {self.options.startup_timeout:g} s and its worker never "
                        f"connected to {self.address}",
                    )
                time.sleep(POLL_S)

    def _fail(self, state: JobState, what: str) -> None:
        raise SlurmError(
            f"SLURM job {state.job_id} {what}; the end of its output:\n"
            + output_tail(self.options.folder(), state.job_id),
            address=self.address,
            backend="dask",
        )

    def _scale(self, n: int) -> None:
        """``n`` jobs; returns once submitted (``jobs()`` shows them pending or running)."""
        self.local_cluster.scale(jobs=n)

    def summary(self) -> dict[str, Any]:
        info = super().summary()
        info["jobs"] = [state.to_json() for state in self.jobs()]
        return info
