"""The sidebar's Dask on SLURM: dask-jobqueue's ``SLURMCluster`` in the Jupyter server's
process, one SLURM job per Dask worker.

The scheduler runs here (as dask-jobqueue runs it) with mutual TLS on certificates made for
this cluster in its log folder, which the compute nodes see; the dashboard stays on loopback
for Jupyter's proxy. A job waiting in the queue keeps the cluster ``starting`` (its card shows
SLURM's reason) for as long as SLURM keeps it there; a job that ends (cancelled, at its
walltime...), or runs ``startup_timeout`` seconds without its worker connecting, is the
cluster's error, which says how it ended. Stopping the cluster, or the server, cancels every
job.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from labkit.clusters.certificates import make_certificates
from labkit.clusters.dask_slurm import StartupWatch, describe_problem, new_jobqueue
from labkit.clusters.slurm import JobState, RecentJobStates, SlurmOptions, check_request
from labkit.log import logger
from labkit.server.launchers.dask import DaskLauncher
from labkit.server.processes import ManagedProcess


class DaskSlurmLauncher(DaskLauncher):
    """A Dask cluster whose workers are SLURM jobs; ``workers`` counts jobs."""

    on = "slurm"
    label = "Dask on SLURM"
    scale_label = "Jobs"
    scale_hint = "SLURM jobs, one Dask worker each; a job that does not fit waits in the queue"

    def __init__(self, workdir: Path, host: str, options: SlurmOptions | None = None):
        super().__init__(workdir, "127.0.0.1")  # where the dashboard listens
        self.options = options or SlurmOptions()
        self.jobqueue: Any = None
        self.tls_folder: Path | None = None
        self.watch: StartupWatch | None = None
        self.recent_states = RecentJobStates()
        self.job_ids: dict[str, str] = {}  # worker name -> its SLURM job, as last seen

    @property
    def takes_remote_nodes(self) -> bool:
        return False  # the jobs join by themselves; nobody runs a join command

    def start(self, workers: int) -> None:
        check_request(self.options)  # SLURM's own refusal, before anything is submitted
        self.tls_folder = self.options.folder() / f"tls-{self.workdir.name}"
        files = make_certificates(self.tls_folder, ["127.0.0.1"], ["scheduler", "worker", "client"])
        from distributed.security import Security

        security = Security(
            tls_ca_file=str(files["scheduler"].ca_file),
            tls_scheduler_cert=str(files["scheduler"].cert),
            tls_scheduler_key=str(files["scheduler"].key),
            tls_worker_cert=str(files["worker"].cert),
            tls_worker_key=str(files["worker"].key),
            tls_client_cert=str(files["client"].cert),
            tls_client_key=str(files["client"].key),
            require_encryption=True,
        )
        self.jobqueue = new_jobqueue(self.options, security)
        client = files["client"]
        self.tls = {"ca_file": str(client.ca_file), "cert": str(client.cert)}
        self.tls["key"] = str(client.key)
        self.address = self.jobqueue.scheduler_address
        self.dashboard_port = urlsplit(self.jobqueue.dashboard_link).port
        self.watch = StartupWatch(self.options.startup_timeout, self.address)
        self.scale(workers)

    def scale(self, workers: int) -> None:
        logger.info("asking SLURM for %d worker jobs for %s", workers, self.address)
        self.jobqueue.scale(jobs=workers)
        self.workers = workers

    def jobs(self) -> list[JobState]:
        """The job of each worker it was asked for, also one that ended on its own (cancelled,
        at its walltime): dask-jobqueue forgets such a job soon after, the card must not."""
        if self.jobqueue is None:
            return []
        for name, job in self.jobqueue.workers.copy().items():
            if job.job_id:
                self.job_ids[name] = str(job.job_id)
        wanted = set(self.jobqueue.worker_spec.copy())  # scaling down takes names out of it
        self.job_ids = {name: job for name, job in self.job_ids.items() if name in wanted}
        return self.recent_states(list(self.job_ids.values()))

    def failure(self) -> str | None:
        if self.jobqueue is None or self.watch is None:
            return None
        connected = len(self.jobqueue.scheduler_info.get("workers", {}))
        problem = self.watch.problem(self.jobs(), connected)
        return describe_problem(problem, self.options) if problem else None

    def processes(self) -> list[ManagedProcess]:
        return []  # the workers are SLURM's jobs, the scheduler lives in this process

    def stop(self) -> None:
        """Cancel every job (dask-jobqueue's close runs scancel) and remove the certificates."""
        if self.jobqueue is not None:
            self.jobqueue.close()
            self.jobqueue = None
        if self.tls_folder is not None:
            shutil.rmtree(self.tls_folder, ignore_errors=True)
        super().stop()
