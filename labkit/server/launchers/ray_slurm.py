"""The sidebar's Ray on SLURM: one batch job per cluster, its first task the head and the
others joining it (Ray's SLURM pattern, ``labkit.clusters.ray_slurm``), with a token made
for that cluster.

The head's address is known only once SLURM runs the job: until then the cluster is
``starting`` (its card shows the job pending with SLURM's reason). The server asks the head's
GCS how many nodes joined; notebooks attach through the head's Ray Client server (``ray://``),
which a login node reaches without being a Ray node itself. Stopping the cluster, or the
server, cancels every job.
"""

from __future__ import annotations

import dataclasses
import shutil
from urllib.parse import urlsplit

from labkit.clusters.address import split_host_port
from labkit.clusters.dask_slurm import StartupWatch, describe_problem
from labkit.clusters.ray_slurm import RaySlurmJobs
from labkit.clusters.slurm import JobState, RecentJobStates, SlurmOptions
from labkit.log import logger
from labkit.server.launchers.ray import RayLauncher
from labkit.server.probes import Health
from labkit.server.processes import ManagedProcess


class RaySlurmLauncher(RayLauncher):
    """A Ray cluster whose nodes are the tasks of SLURM jobs; ``workers`` counts nodes."""

    on = "slurm"
    label = "Ray on SLURM"
    worker_unit = "nodes"
    scale_label = "Nodes"
    scale_hint = (
        "Ray nodes, one SLURM task each (the first is the head); nodes beyond the first "
        "job's come as jobs of their own, which wait in the queue when they do not fit"
    )

    def __init__(self, workdir, host: str, options: SlurmOptions | None = None):
        super().__init__(workdir, host)
        self.options = options or SlurmOptions()
        self.slurm: RaySlurmJobs | None = None
        self.watch: StartupWatch | None = None
        self.recent_states = RecentJobStates()

    @property
    def takes_remote_nodes(self) -> bool:
        return False  # the jobs join by themselves; nobody runs a join command

    @classmethod
    def ready(cls, health: Health, wanted: int) -> bool:
        return (health.workers or 0) >= wanted  # nodes, not CPU slots

    def start(self, workers: int) -> None:
        options = dataclasses.replace(self.options, jobs=workers)
        self.slurm = RaySlurmJobs.submit(options)  # SLURM's own refusal, before anything runs
        self.token_file = str(self.slurm.token_file)
        self.watch = StartupWatch(options.startup_timeout, "")
        self.workers = workers

    def refresh(self) -> None:
        """Learn the head's addresses once its task has written them."""
        if self.slurm is None or self.probe_address:
            return
        head = self.slurm.head()
        if head is not None:
            self.address, self.probe_address = head["client"], head["gcs"]
            self.host = split_host_port(head["gcs"])[0]
            self.dashboard_port = urlsplit(head["dashboard"]).port
            logger.info("the Ray head of SLURM job %s is at %s", self.slurm.job_id, self.address)

    def scale(self, workers: int) -> None:
        assert self.slurm is not None
        logger.info("asking SLURM for %d Ray nodes for job %s", workers, self.slurm.job_id)
        self.slurm.scale(workers)
        self.workers = workers

    def jobs(self) -> list[JobState]:
        return self.recent_states(self.slurm.ids) if self.slurm is not None else []

    def failure(self) -> str | None:
        if self.slurm is None or self.watch is None:
            return None
        states = self.jobs()
        # the head's answer is what this launcher can judge; nodes joining, the probe counts
        connected = len(states) if self.probe_address else 0
        problem = self.watch.problem(states, connected)
        if problem is None:
            return None
        state, what = problem
        if state.state != "ENDED":
            what = f"has run {self.options.startup_timeout:g} s and its Ray head never answered"
        return describe_problem((state, what), self.options)

    def processes(self) -> list[ManagedProcess]:
        return []  # the nodes are SLURM's jobs

    def stop(self) -> None:
        """Cancel every job (each node stops its Ray on ``scancel``) and drop the token."""
        if self.slurm is not None:
            self.slurm.cancel()
        shutil.rmtree(self.workdir, ignore_errors=True)
