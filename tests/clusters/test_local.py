"""Embedded local clusters: loopback only, scalable, cleanly replaced."""

import contextlib
import os
import signal
import tempfile
import threading
import time

import psutil
import pytest

import labkit
from labkit.errors import ClusterTaskError, ParameterError
from tests.conftest import wait_for


def _listening_addresses(pids: set[int]) -> set[str]:
    return {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    }


def _settings(pids: set[int], name: str) -> set[str | None]:
    """The values of environment variable ``name`` in the processes ``pids`` still running
    (less those that renamed themselves: a long process title overwrites /proc's environ)."""
    found = set()
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if env := psutil.Process(pid).environ():
                found.add(env.get(name))
    return found


def _descendants() -> set[int]:
    """Child processes, less multiprocessing's resource tracker (one per Python process)."""
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(child.cmdline())
    }


def test_local_dask_is_loopback_only_scales_and_leaks_nothing():
    before = _descendants()
    cluster = labkit.connect(backend="dask", workers=2)
    assert (cluster.backend, cluster.local) == ("dask", True)
    assert cluster.address.startswith("tcp://127.0.0.1:")
    assert cluster.resources()["workers"] == 2
    started = _descendants() - before
    assert started, "LocalCluster should run workers as processes"
    assert _listening_addresses(started | {psutil.Process().pid}) <= {"127.0.0.1"}

    cluster.scale(1)
    assert cluster.resources()["workers"] == 1
    cluster.scale(3)
    assert [w["cpus"] for w in cluster.workers()] == [1, 1, 1]
    assert cluster.map(str, range(10), progress=False) == [str(i) for i in range(10)]

    replacement = labkit.connect(backend="dask", workers=1)
    assert cluster.closed and labkit.current() is replacement
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in started), 30, "old workers to exit")
    replacement.close()


def test_local_ray_is_loopback_only_scales_and_leaks_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_BACKEND", "ray")
    # A temp dir this long would push Ray's dashboard sockets past Linux's 107-byte limit.
    long_tmp = tmp_path / ("deep" * 20)
    long_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    before = _descendants()
    cluster = labkit.connect(workers=1)
    assert (cluster.backend, cluster.local) == ("ray", True)
    assert len(cluster.temp_dir) <= 32
    assert cluster.address.startswith("127.0.0.1:")
    assert cluster.dashboard_url.startswith("http://127.0.0.1:")
    assert cluster.resources()["cpus"] == 1
    first_processes = _descendants() - before
    assert _listening_addresses(first_processes) <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert _settings(first_processes, "GRPC_ENABLE_FORK_SUPPORT") == {"0"}  # ray_processes

    with pytest.warns(UserWarning, match="restarts it"):
        cluster.scale(2)
    assert cluster.resources()["cpus"] == 2
    assert cluster.map(lambda x: x + 1, range(50), progress=False) == list(range(1, 51))
    wait_for(lambda: not any(psutil.pid_exists(p) for p in first_processes), 30, "old Ray")

    second_processes = _descendants() - before
    temp_dir = cluster.temp_dir
    cluster.close()
    wait_for(lambda: not any(psutil.pid_exists(p) for p in second_processes), 30, "Ray to stop")
    assert not os.path.exists(temp_dir)


def test_map_shows_progress_and_can_be_interrupted(capsys):
    cluster = labkit.connect(backend="dask", workers=2)
    assert cluster.map(abs, range(-5, 5), desc="absolute") == [abs(i) for i in range(-5, 5)]
    assert "absolute: 100%" in capsys.readouterr().err

    # a real SIGINT to this process (what Ctrl-C sends), each second until the map gives way,
    # with Python's own handler in place whatever an earlier library installed
    done = threading.Event()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def press_ctrl_c() -> None:
        while not done.wait(1.0):
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    started = time.monotonic()
    try:
        cluster.map(time.sleep, [0.5] * 40, progress=False, chunksize=1)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    finally:
        done.set()
        presser.join()
        signal.signal(signal.SIGINT, previous)
    assert interrupted
    assert time.monotonic() - started < 9  # 40 x 0.5 s on 2 workers would take 10 s
    # the cancelled work is gone: a new map runs at once on free workers
    assert cluster.map(abs, [-1, -2], progress=False) == [1, 2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"workers": 0}, "workers"), ({"workers": 1.5}, "workers"), ({"timeout": "soon"}, "timeout")],
)
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        labkit.connect(backend="dask", **kwargs)


def test_current_without_connection_says_to_connect_first():
    with pytest.raises(labkit.LabkitError, match=r"labkit.connect\(\)"):
        labkit.current()


def _die_once(marker_and_item):
    """Kill the worker process the first time item 3 runs; succeed on the retry."""
    import os
    from pathlib import Path

    marker, item = marker_and_item
    if item == 3 and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return item


def _always_die(item):
    import os

    os._exit(1)


def test_killed_worker_loses_no_item_and_a_dead_task_is_named(tmp_path):
    cluster = labkit.connect(backend="dask", workers=2)
    marker = str(tmp_path / "died")
    items = [(marker, i) for i in range(8)]
    assert cluster.map(_die_once, items, progress=False, chunksize=1) == list(range(8))
    assert (tmp_path / "died").exists()
    with pytest.raises(ClusterTaskError, match=r"dask cluster could not run items 0-0") as info:
        cluster.map(_always_die, [0], progress=False)
    assert (info.value.first_item, info.value.last_item) == (0, 0)


def test_ray_processes_get_labkits_settings_unless_the_user_made_them():
    from labkit.clusters.ray_processes import ray_process_env

    mine = {"GRPC_ENABLE_FORK_SUPPORT": "1", "HOME": "/home/me"}
    assert ray_process_env(mine) == mine | {"PYTHONFAULTHANDLER": "1"}
    assert ray_process_env({})["GRPC_ENABLE_FORK_SUPPORT"] == "0"
