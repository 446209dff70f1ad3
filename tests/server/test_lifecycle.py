"""Managed clusters end to end: real `dask scheduler`/`dask worker` and `ray start` processes
started, scaled and stopped through the REST API, and stopped when the server shuts down."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request

import psutil
import pytest

import labkit
from labkit.clusters.registry import read_registry
from labkit.server.processes import pid_alive

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


async def until(api, cluster_id: str, check, timeout: float = 90, what: str = "") -> dict:
    """Poll the cluster's card until ``check(card)`` holds, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        status, card = await api("GET", "clusters", cluster_id)
        assert status == 200, card
        if check(card):
            return card
        assert card["status"] != "error", card
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout} s: {card}")
        await asyncio.sleep(0.25)


async def gone(pids: list[int], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


def listening_hosts(pids: list[int]) -> set[str]:
    """The addresses that these processes and their children listen on."""
    hosts = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in family:
            try:
                connections = process.net_connections(kind="inet")
            except psutil.Error:
                continue
            hosts |= {c.laddr.ip for c in connections if c.status == psutil.CONN_LISTEN}
    return hosts


def running_with(workers: int):
    return lambda card: card["status"] == "running" and card["workers"] == workers


async def test_dask_lifecycle(api, jp_fetch, manager):
    status, card = await api("POST", "clusters", body={"backend": "dask", "workers": 2})
    assert status == 201
    assert (card["id"], card["name"], card["backend"], card["managed"]) == (
        "dask-1",
        "dask-1",
        "dask",
        True,
    )
    assert card["status"] in ("starting", "running")
    assert card["address"].startswith("tcp://127.0.0.1:")
    card = await until(api, "dask-1", running_with(2), what="2 dask workers")
    assert card["cpus"] == 2 and card["memory_bytes"] > 0
    pids = manager.managed_pids()
    assert len(pids) == 3 and all(pid_alive(pid) for pid in pids)
    assert listening_hosts(pids) <= LOOPBACK  # workers' HTTP servers included

    # The registry tells kernels the name; connecting by name from Python works.
    entry = next(e for e in read_registry() if e.name == "dask-1")
    assert (entry.address, entry.managed, sorted(entry.pids)) == (
        card["address"],
        True,
        sorted(pids),
    )
    squares = await asyncio.to_thread(_map_on, "dask-1")
    assert squares == [0, 1, 4, 9]

    # The dashboard answers through the Jupyter server (jupyter-server-proxy underneath).
    assert card["dashboard_url"] == "/a%40b/labkit/dashboard/dask-1/status"
    page = await jp_fetch("labkit", "dashboard", "dask-1", "status")
    assert page.code == 200 and b"Dask" in page.body

    status, card = await api("PATCH", "clusters", "dask-1", body={"workers": 3})
    assert status == 200
    await until(api, "dask-1", running_with(3), what="3 dask workers")
    status, card = await api("PATCH", "clusters", "dask-1", body={"workers": 1})
    assert status == 200
    await until(api, "dask-1", running_with(1), what="1 dask worker")
    removed = [pid for pid in pids if pid not in manager.managed_pids()]
    assert len(removed) == 1 and await gone(removed)

    alive = manager.managed_pids()
    assert (await api("DELETE", "clusters", "dask-1"))[0] == 204
    assert await gone(alive)
    assert (await api("GET", "clusters", "dask-1"))[0] == 404
    assert all(e.name != "dask-1" for e in read_registry())


def _map_on(name: str) -> list[int]:
    cluster = labkit.connect(name)
    try:
        return cluster.map(lambda x: x * x, range(4), progress=False)
    finally:
        labkit.disconnect()


async def test_ray_lifecycle(api, jp_fetch, manager):
    status, card = await api("POST", "clusters", body={"backend": "ray", "workers": 1})
    assert status == 201 and card["name"] == "ray-1"
    card = await until(api, "ray-1", lambda c: c["status"] == "running", what="ray head")
    assert (card["workers"], card["cpus"]) == (1, 1)
    assert card["memory_bytes"] > 0
    first = manager.managed_pids()
    entry = next(e for e in read_registry() if e.name == "ray-1")
    assert entry.token_file and entry.address == card["address"]  # token auth is on
    # A kernel of this server attaches by name, with the token the registry names.
    assert await asyncio.to_thread(_map_on, "ray-1") == [0, 1, 4, 9]

    # The Ray dashboard answers through the Jupyter server, which adds the cluster's token:
    # Ray's own API refuses the same request without it.
    assert card["dashboard_url"] == "/a%40b/labkit/dashboard/ray-1/"
    page = await jp_fetch("labkit", "dashboard", "ray-1", "api", "version")
    assert page.code == 200 and b"ray_version" in page.body
    port = (await manager.dashboard_target("ray-1")).port
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=10)
    assert refused.value.code == 401

    # The same cluster registered by address reports the same figures over the GCS.
    body = {"address": card["address"], "backend": "ray", "token_file": entry.token_file}
    body["name"] = "ray-again"
    status, again = await api("POST", "clusters", body=body)
    assert status == 400 and "already listed" in again["message"]

    # Scaling a local Ray cluster restarts its single node with n CPU slots.
    status, card = await api("PATCH", "clusters", "ray-1", body={"workers": 2})
    assert status == 200
    card = await until(api, "ray-1", lambda c: c["status"] == "running" and c["cpus"] == 2)
    assert await gone(first)
    second = manager.managed_pids()
    assert listening_hosts(second) <= LOOPBACK
    assert next(e for e in read_registry() if e.name == "ray-1").address == card["address"]

    assert (await api("DELETE", "clusters", "ray-1"))[0] == 204
    assert await gone(second)
    assert await api("GET", "clusters") == (200, [])


async def test_server_shutdown_stops_managed_clusters(api, jp_serverapp, manager):
    status, card = await api("POST", "clusters", body={"backend": "dask", "workers": 1})
    assert status == 201
    await until(api, card["id"], running_with(1))
    pids = manager.managed_pids()
    assert pids and all(pid_alive(pid) for pid in pids)

    await jp_serverapp.extension_manager.stop_all_extensions()

    assert await gone(pids)
    assert read_registry() == []


async def test_clusters_started_by_kernels_are_listed(api):
    cluster = await asyncio.to_thread(labkit.connect, backend="dask", workers=1)
    try:
        status, listing = await api("GET", "clusters")
        assert status == 200
        [card] = listing
        assert card["origin"] == "kernel" and card["managed"] is False
        assert (card["address"], card["status"], card["workers"]) == (cluster.address, "running", 1)
        assert card["connect"] == f"%labkit connect {cluster.address} --backend dask"
        status, reply = await api("DELETE", "clusters", card["id"])
        assert status == 400 and "%labkit disconnect" in reply["message"]
        status, reply = await api("PATCH", "clusters", card["id"], body={"workers": 2})
        assert status == 400 and "cannot scale" in reply["message"]
    finally:
        await asyncio.to_thread(labkit.disconnect)
    assert await api("GET", "clusters") == (200, [])
