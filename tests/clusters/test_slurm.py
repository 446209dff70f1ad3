"""Dask on SLURM (dask-jobqueue) against a real slurmctld and slurmd (``tests/slurmbed.py``).

The node has 2 CPUs: two 1-core jobs run, a third waits with SLURM's reason "Resources".
"""

from __future__ import annotations

import pytest

import labkit
from labkit.clusters import slurm as slurm_module
from labkit.errors import ParameterError, SlurmError
from tests.conftest import wait_for


def _options(folder, **more) -> dict:
    """Small jobs on loopback, their output (and TLS files) in ``folder``."""
    return {"cores": 1, "memory": "1GiB", "interface": "lo", "log_directory": str(folder)} | more


def test_a_notebook_attaches_to_dask_workers_running_as_slurm_jobs(slurm, tmp_path):
    cluster = labkit.connect(backend="dask", on="slurm", jobs=2, **_options(tmp_path))
    try:
        assert labkit.current() is cluster and cluster.address.startswith("tls://127.0.0.1:")
        jobs = cluster.jobs()
        assert [job.state for job in jobs] == ["RUNNING", "RUNNING"]
        assert sorted(job.job_id for job in jobs) == sorted(slurm.jobs())
        assert [w["host"] for w in cluster.workers()] == ["127.0.0.1", "127.0.0.1"]
        assert cluster.map(abs, range(-20, 0), progress=False) == list(range(20, 0, -1))

        cluster.scale(3)  # a third job does not fit on the 2-CPU node: pending, and says why
        third = wait_for(
            lambda: [j for j in cluster.jobs() if j.state == "PENDING" and j.reason],
            30,
            "a third job, pending with a reason",
        )
        assert third[0].reason == "Resources"
        shown = [(j["job_id"], j["state"], j["reason"]) for j in cluster.summary()["jobs"]]
        assert (third[0].job_id, "PENDING", "Resources") in shown
    finally:
        cluster.close()
    wait_for(lambda: not slurm.jobs(), 60, "every job cancelled")


def test_a_job_whose_worker_never_connects_fails_naming_it_and_its_output(slurm, tmp_path):
    options = _options(tmp_path, prologue=["echo preparing the node", "sleep 300"])
    with pytest.raises(SlurmError, match=r"SLURM job \d+ has run 3 s") as err:
        labkit.connect(backend="dask", on="slurm", jobs=1, startup_timeout=3, **options)
    assert "its worker never connected" in str(err.value)
    assert "preparing the node" in str(err.value)  # the end of the job's output file
    wait_for(lambda: not slurm.jobs(), 60, "the job cancelled")


def test_slurm_refusals_are_named_before_anything_runs(slurm, monkeypatch, tmp_path):
    with pytest.raises(SlurmError, match="invalid partition specified: nope"):
        labkit.connect(backend="dask", on="slurm", partition="nope", **_options(tmp_path))
    with pytest.raises(SlurmError, match="Requested node configuration is not available"):
        labkit.connect(backend="dask", on="slurm", **_options(tmp_path, cores=64))
    with pytest.raises(ParameterError, match="unknown SLURM option.*queue"):
        labkit.connect(backend="dask", on="slurm", queue="debug")
    with pytest.raises(ParameterError, match="add on='slurm'"):
        labkit.connect(backend="dask", jobs=2)
    with pytest.raises(SlurmError, match="invalid partition specified: nope"):
        labkit.connect(backend="ray", on="slurm", partition="nope", log_directory=str(tmp_path))
    with pytest.raises(ParameterError, match="interface='lo' is loopback.*routable"):
        labkit.connect(backend="ray", on="slurm", **_options(tmp_path))  # Ray nodes join off it
    assert slurm.jobs() == []
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="SLURM is not available on this machine: sbatch"):
        labkit.connect(backend="dask", on="slurm")


def test_importing_dask_jobqueue_keeps_the_interrupt_handler():
    """dask-jobqueue's import would make Ctrl-C exit the process (a kernel's interrupt)."""
    import subprocess
    import sys

    script = (
        "import signal\n"
        "from labkit.clusters.dask_slurm import slurm_cluster_class\n"
        "before = signal.getsignal(signal.SIGINT)\n"
        "assert slurm_cluster_class().__name__ == 'SLURMCluster'\n"
        "assert signal.getsignal(signal.SIGINT) is before, signal.getsignal(signal.SIGINT)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_recent_job_states_ask_squeue_once_per_poll(monkeypatch):
    asked: list[list[str]] = []

    def job_states(ids):
        asked.append(list(ids))
        return {i: slurm_module.JobState(i, "RUNNING", None) for i in ids}

    monkeypatch.setattr(slurm_module, "job_states", job_states)
    recent = slurm_module.RecentJobStates(ttl=60)
    first = recent(["1", "2"])
    assert recent(["1", "2"]) is first and asked == [["1", "2"]]  # the same poll: no squeue
    recent(["1", "2", "3"])  # scaled: other jobs, asked again
    assert asked[-1] == ["1", "2", "3"]
    recent.ttl = 0
    recent(["1", "2", "3"])
    assert len(asked) == 3
