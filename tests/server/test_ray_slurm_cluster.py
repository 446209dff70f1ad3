"""The sidebar's Ray on SLURM, through the REST API of a real Jupyter server, against a real
slurmctld and slurmd (``tests/slurmbed.py``): one job whose first task is the head, the
address learnt once SLURM runs it, nodes counted from the head, a kernel attaching by name
through the Ray Client server, and Stop cancelling the job."""

from __future__ import annotations

import asyncio
import os

import pytest
from traitlets.config import Config

import labkit
from tests.conftest import ray_on_slurm_tests, wait_for
from tests.server.test_slurm_clusters import _until
from tests.slurmbed import kill_all, ray_node_dirs, ray_node_processes

pytestmark = [pytest.mark.usefixtures("slurm"), ray_on_slurm_tests]


@pytest.fixture
def jp_server_config(tmp_path, routable_interface) -> Config:
    nodes = {"cores": 1, "memory": "1GiB", "log_directory": str(tmp_path)}
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"labkit.server": True}},
            "ClusterManager": {
                "startup_timeout": 120.0,
                "slurm_profiles": {"nodes": nodes | {"interface": routable_interface}},
            },
        }
    )


async def test_the_sidebar_starts_and_stops_ray_on_slurm(api, manager, slurm, tmp_path):
    status, backends = await api("GET", "backends")
    [ray] = [b for b in backends if b["on"] == "slurm" and b["name"] == "ray"]
    assert (ray["label"], ray["worker_unit"], ray["profiles"]) == (
        "Ray on SLURM",
        "nodes",
        ["nodes"],
    )

    body = {"backend": "ray", "on": "slurm", "jobs": 2, "profile": "nodes"}
    status, started = await api("POST", "clusters", body=body)
    assert status == 201, started
    cid = started["id"]
    assert started["status"] == "starting" and len(started["jobs"]) == 1
    running = await _until(api, cid, lambda c: c["status"] == "running", "2 Ray nodes", 120)
    assert running["workers"] == 2 and running["address"].startswith("ray://198.19.254.1:")
    assert [job["job_id"] for job in running["jobs"]] == slurm.jobs()
    assert running["dashboard_url"].endswith(f"/labkit/dashboard/{cid}/")  # proxied

    # a kernel attaches by the card's name, through the head's Ray Client with the token
    cluster = await asyncio.to_thread(labkit.connect, running["name"])
    try:
        assert await asyncio.to_thread(cluster.map, abs, [-1, -2], progress=False) == [1, 2]
    finally:
        await asyncio.to_thread(labkit.disconnect)

    token = manager._clusters[cid].launcher.token_file
    dirs = ray_node_dirs(tmp_path, running["jobs"][0]["job_id"])
    try:
        status, _ = await api("DELETE", "clusters", cid)
        assert status == 204
        await asyncio.to_thread(wait_for, lambda: not slurm.jobs(), 60, "the job cancelled")
        assert len(dirs) == 2 and not os.path.exists(token)
        await asyncio.to_thread(wait_for, lambda: not ray_node_processes(dirs), 30, "nodes stopped")
    finally:
        kill_all(ray_node_processes(dirs))
