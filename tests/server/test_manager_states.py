"""The manager's states (starting, running, scaling, stopping, error) with a fake launcher.

No process is started: ``ClusterManager.launcher_classes`` is configured with the toy
backend's launcher, whose health and timing the tests control. The real-process tests in
``test_lifecycle.py`` cover the same paths with Ray and Dask.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from labkit.errors import ClusterNotFoundError, ParameterError, UnsupportedOperationError
from labkit.server.manager import ClusterManager
from labkit.server.probes import Health
from tests import toy_backend
from tests.toy_backend import REPORTS, ToyLauncher


@pytest.fixture
def manager(tmp_path, monkeypatch):
    monkeypatch.setattr(ToyLauncher, "gate", None)
    monkeypatch.setattr(ToyLauncher, "fail_start", False)
    manager = ClusterManager(
        launcher_classes={"toy": ToyLauncher},
        slurm_launcher_classes={},
        launcher_options={"toy": {"greeting": "hi"}},
        registry_file=str(tmp_path / "registry.json"),
        work_root=str(tmp_path),
        list_kernel_clusters=False,
        startup_timeout=60.0,
    )
    yield manager
    asyncio.run(manager.shutdown())


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_manager_names_the_backends_of_its_launchers(manager):
    [toy] = manager.backends()
    assert (toy.name, toy.label, toy.worker_unit, toy.scale_label) == (
        "toy",
        "Toy",
        "toys",
        "Workers",
    )


def launcher_of(manager: ClusterManager, cluster_id: str) -> ToyLauncher:
    return manager._clusters[cluster_id].launcher


def test_a_started_cluster_is_starting_until_its_workers_join(manager):
    described = run(manager.start_cluster("toy", workers=2))
    assert described.status == "starting" and described.name == "toy-1"
    launcher = launcher_of(manager, "toy-1")
    assert launcher.greeting == "hi"  # launcher_options reach the launcher
    REPORTS[launcher.address] = Health(True, workers=2, cpus=2, gpus=0, memory_bytes=10)
    described = run(manager.get_cluster("toy-1"))
    assert described.status == "running" and described.workers == 2
    assert described.dashboard_url.endswith("/toy-status")


def test_only_the_configured_launchers_are_backends(manager):
    with pytest.raises(ParameterError, match="unknown backend 'dask': choose one of toy"):
        run(manager.start_cluster("dask"))


async def until_busy(manager: ClusterManager, cluster_id: str, timeout: float = 10) -> None:
    """Until the manager has begun a change of ``cluster_id`` (its launcher is held at a gate)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not manager._clusters[cluster_id].busy:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{cluster_id} not busy within {timeout:g} s")
        await asyncio.sleep(0.01)


def test_scaling_then_running_and_one_change_at_a_time(manager):
    async def scenario():
        await manager.start_cluster("toy", workers=1)
        launcher = launcher_of(manager, "toy-1")
        REPORTS[launcher.address] = Health(True, workers=1)
        assert (await manager.get_cluster("toy-1")).status == "running"
        ToyLauncher.gate = threading.Event()
        scaling = asyncio.create_task(manager.scale_cluster("toy-1", 3))
        await until_busy(manager, "toy-1")
        assert (await manager.get_cluster("toy-1")).status == "scaling"
        with pytest.raises(UnsupportedOperationError, match="is scaling; try again"):
            await manager.scale_cluster("toy-1", 2)
        ToyLauncher.gate.set()
        described = await scaling
        assert described.status == "scaling"  # the new workers have not joined yet
        assert described.requested_workers == 3
        REPORTS[launcher.address] = Health(True, workers=3)
        return await manager.get_cluster("toy-1")

    assert run(scenario()).status == "running"


def test_stopping_then_gone(manager):
    async def scenario():
        await manager.start_cluster("toy", workers=1)
        launcher = launcher_of(manager, "toy-1")
        ToyLauncher.gate = threading.Event()
        stopping = asyncio.create_task(manager.remove_cluster("toy-1"))
        await until_busy(manager, "toy-1")
        assert (await manager.get_cluster("toy-1")).status == "stopping"
        await manager.remove_cluster("toy-1")  # a second stop while stopping is a no-op
        ToyLauncher.gate.set()
        await stopping
        assert launcher.stopped
        with pytest.raises(ClusterNotFoundError):
            await manager.get_cluster("toy-1")
        return await manager.list_clusters()

    assert run(scenario()) == []


def test_a_broken_process_is_an_error_with_its_reason(manager):
    run(manager.start_cluster("toy", workers=1))
    launcher_of(manager, "toy-1").broken = "`toy worker` (pid 1) exited with 1: boom"
    described = run(manager.get_cluster("toy-1"))
    assert described.status == "error" and "boom" in described.error


def test_an_error_is_kept_once_said_until_a_scale_starts_afresh(manager):
    """A batch system forgets how a job ended a while later; the card keeps the reason."""
    run(manager.start_cluster("toy", workers=1))
    launcher = launcher_of(manager, "toy-1")
    launcher.broken = "SLURM job 7 hit its walltime (TIMEOUT)"
    assert run(manager.get_cluster("toy-1")).error == launcher.broken
    launcher.broken = None  # squeue no longer remembers the job
    described = run(manager.get_cluster("toy-1"))
    assert (described.status, described.error) == (
        "error",
        "SLURM job 7 hit its walltime (TIMEOUT)",
    )
    REPORTS[launcher.address] = Health(True, workers=2)
    assert run(manager.scale_cluster("toy-1", 2)).status == "running"


def test_a_cluster_that_never_answers_is_an_error_after_the_startup_timeout(manager):
    manager.startup_timeout = 0.0
    run(manager.start_cluster("toy", workers=1))
    launcher = launcher_of(manager, "toy-1")
    REPORTS[launcher.address] = Health(False, error="the toy scheduler is not answering")
    described = run(manager.get_cluster("toy-1"))
    assert described.status == "error"
    assert described.error == "the toy scheduler is not answering"


def test_a_start_that_fails_leaves_nothing_behind(manager):
    ToyLauncher.fail_start = True
    with pytest.raises(OSError, match="would not start"):
        run(manager.start_cluster("toy"))
    assert run(manager.list_clusters()) == []


def test_a_registered_backend_is_managed_without_configuring_the_manager(tmp_path, monkeypatch):
    from labkit.clusters import backends

    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    toy_backend.register()
    manager = ClusterManager(registry_file=str(tmp_path / "r.json"), list_kernel_clusters=False)
    try:
        assert manager.launcher_classes["toy"] == toy_backend.LAUNCHER
        assert run(manager.start_cluster("toy", workers=1)).backend == "toy"
    finally:
        run(manager.shutdown())
