"""The sidebar's Dask on SLURM, through the REST API of a real Jupyter server, against a real
slurmctld and slurmd (``tests/slurmbed.py``): profiles from the server's settings, the card's
job ids and states (a job that does not fit is pending with SLURM's reason, not an error),
a kernel attaching by name, and Stop and server shutdown cancelling every job."""

from __future__ import annotations

import asyncio

import pytest
from traitlets.config import Config

import labkit
from tests.conftest import wait_for

pytestmark = pytest.mark.usefixtures("slurm")


@pytest.fixture
def jp_server_config(tmp_path) -> Config:
    small = {"cores": 1, "memory": "1GiB", "interface": "lo", "log_directory": str(tmp_path)}
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"labkit.server": True}},
            "ClusterManager": {
                "startup_timeout": 90.0,
                "slurm_profiles": {"small": small, "nowhere": small | {"partition": "nope"}},
            },
        }
    )


async def _until(api, cluster_id: str, check, what: str, timeout: float = 90):
    """The cluster's description once ``check`` holds for it (polled, bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, described = await api("GET", "clusters", cluster_id)
        assert status == 200, described
        if check(described):
            return described
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s; last seen: {described}")
        await asyncio.sleep(0.5)


async def test_the_sidebar_starts_scales_and_stops_dask_on_slurm(api, manager, slurm):
    status, backends = await api("GET", "backends")
    [on_slurm] = [b for b in backends if b["on"] == "slurm" and b["name"] == "dask"]
    assert (on_slurm["name"], on_slurm["label"]) == ("dask", "Dask on SLURM")
    assert on_slurm["profiles"] == ["nowhere", "small"]

    body = {"backend": "dask", "on": "slurm", "jobs": 2, "profile": "small"}
    status, started = await api("POST", "clusters", body=body)
    assert status == 201, started
    cid = started["id"]
    assert started["name"].startswith("dask-slurm-")
    running = await _until(api, cid, lambda c: c["status"] == "running", "2 workers")
    assert running["workers"] == 2 and running["address"].startswith("tls://127.0.0.1:")
    assert sorted(job["job_id"] for job in running["jobs"]) == sorted(slurm.jobs())
    assert {job["state"] for job in running["jobs"]} == {"RUNNING"}

    # a kernel attaches by name, with the client certificate the server made for it
    cluster = await asyncio.to_thread(labkit.connect, running["name"])
    try:
        assert await asyncio.to_thread(cluster.map, abs, [-1, -2, -3], progress=False) == [1, 2, 3]
    finally:
        await asyncio.to_thread(labkit.disconnect)

    # a third job does not fit on the 2-CPU node: pending with SLURM's reason, not an error
    status, _ = await api("PATCH", "clusters", cid, body={"workers": 3})
    assert status == 200
    pending = await _until(
        api,
        cid,
        lambda c: any(job["state"] == "PENDING" and job["reason"] for job in c["jobs"]),
        "a pending third job",
    )
    assert pending["status"] in ("scaling", "running") and pending["error"] is None
    assert [job["reason"] for job in pending["jobs"] if job["state"] == "PENDING"] == ["Resources"]

    status, _ = await api("DELETE", "clusters", cid)
    assert status == 204
    wait_for(lambda: not slurm.jobs(), 60, "every job of the stopped cluster cancelled")


async def test_server_shutdown_cancels_the_jobs(api, manager, slurm):
    body = {"backend": "dask", "on": "slurm", "jobs": 1, "profile": "small"}
    status, started = await api("POST", "clusters", body=body)
    assert status == 201, started
    await _until(api, started["id"], lambda c: c["status"] == "running", "its worker")
    assert len(slurm.jobs()) == 1
    await manager.shutdown()
    wait_for(lambda: not slurm.jobs(), 60, "every job cancelled at shutdown")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"profile": "nowhere"}, "invalid partition specified: nope"),
        ({"profile": "huge"}, "no SLURM profile 'huge': known profiles are nowhere, small"),
        ({"on": "moon"}, "unknown 'on' 'moon'"),
        ({"backend": "spark"}, "unknown backend 'spark' on SLURM: choose one of dask, ray"),
    ],
)
async def test_slurm_refusals_name_the_cause_and_submit_nothing(api, slurm, body, words):
    status, answer = await api("POST", "clusters", body={"backend": "dask", "on": "slurm"} | body)
    assert status == 400 and words in answer["message"]
    assert slurm.jobs() == []


async def test_jobs_without_on_slurm_is_refused(api):
    status, answer = await api("POST", "clusters", body={"backend": "dask", "jobs": 2})
    assert status == 400 and "on" in answer["message"]


async def test_a_job_cancelled_outside_is_the_clusters_error_and_says_how_it_ended(
    api, manager, slurm
):
    body = {"backend": "dask", "on": "slurm", "jobs": 1, "profile": "small"}
    status, started = await api("POST", "clusters", body=body)
    assert status == 201, started
    running = await _until(api, started["id"], lambda c: c["status"] == "running", "its worker")
    [job] = running["jobs"]
    assert job["time_limit_s"] == 30 * 60  # the profile's walltime (SlurmOptions' default)
    assert 0 < job["time_left_s"] <= job["time_limit_s"] and job["ended_as"] is None

    assert slurm.run("scancel", job["job_id"]).returncode == 0
    ended = await _until(api, started["id"], lambda c: c["status"] == "error", "the error")
    assert ended["error"].startswith(f"SLURM job {job['job_id']} was cancelled (CANCELLED);")
    assert ended["jobs"] == [job | {"state": "ENDED", "ended_as": "CANCELLED", "time_left_s": None}]
    # dask-jobqueue forgets the job a few seconds later; the card keeps it and the reason
    jobqueue = manager._clusters[started["id"]].launcher.jobqueue
    await asyncio.to_thread(wait_for, lambda: not jobqueue.workers, 60, "the job forgotten")
    status, later = await api("GET", "clusters", started["id"])
    assert (later["status"], later["error"], later["jobs"]) == (
        "error",
        ended["error"],
        ended["jobs"],
    )
    status, _ = await api("DELETE", "clusters", started["id"])
    assert status == 204
