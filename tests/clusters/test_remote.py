"""The Cluster API against clusters started as separate processes."""

import time

import pytest

import labkit
from labkit.errors import (
    ConnectError,
    MapItemError,
    NotConnectedError,
    UnsupportedOperationError,
)
from tests.conftest import dask_processes


def _square_slowly_first(x):
    # the first items take longest, so chunks finish out of order
    time.sleep(0.02 if x < 10 else 0.0)
    return x * x


def _fail_on_seven(x):
    if x == 7:
        raise ValueError(f"bad value {x}")
    return x


@pytest.fixture(params=["ray-gcs", "ray-client", "dask"])
def remote(request, ray_head, dask_scheduler):
    if request.param == "dask":
        return labkit.connect(dask_scheduler.address, timeout=30)
    address = ray_head.gcs_address if request.param == "ray-gcs" else ray_head.client_address
    return labkit.connect(address, backend="ray", token_file=ray_head.token_file, timeout=30)


def test_attaches_and_reports_resources(remote):
    assert labkit.current() is remote
    assert remote.local is False
    workers = remote.workers()
    assert len(workers) == 1
    assert set(workers[0]) == {"id", "host", "cpus", "gpus", "memory_bytes"}
    assert workers[0]["host"] == "127.0.0.1"
    assert workers[0]["cpus"] == 2
    totals = remote.resources()
    assert totals == {
        "workers": 1,
        "cpus": 2,
        "gpus": 0,
        "memory_bytes": workers[0]["memory_bytes"],
    }
    assert totals["memory_bytes"] > 0


def test_dashboard_link_and_rich_display(remote):
    assert remote.dashboard_url.startswith("http://127.0.0.1:")
    page = remote._repr_html_()
    for shown in (remote.backend, remote.address, "cpus", "gpus", "memory", "workers"):
        assert shown in page
    assert f'href="{remote.dashboard_url}"' in page


def test_map_keeps_order_when_chunks_finish_out_of_order(remote):
    assert remote.map(_square_slowly_first, range(100), progress=False) == [
        x * x for x in range(100)
    ]


def test_map_reraises_with_the_failing_item(remote):
    with pytest.raises(MapItemError, match=r"item 7 \(7\): ValueError: bad value 7") as info:
        remote.map(_fail_on_seven, range(20), progress=False, chunksize=3)
    assert info.value.index == 7 and info.value.item == 7
    assert isinstance(info.value.__cause__, ValueError)
    assert "bad value 7" in info.value.worker_traceback
    assert remote.map(abs, [-3], progress=False) == [3]  # still usable


def test_scaling_a_remote_cluster_is_refused(remote):
    with pytest.raises(
        UnsupportedOperationError, match=f"cannot scale the remote .* at {remote.address}"
    ):
        remote.scale(3)


def test_closed_cluster_says_to_connect_first(remote):
    labkit.disconnect()
    with pytest.raises(NotConnectedError, match="connect first"):
        remote.map(abs, [1])
    with pytest.raises(NotConnectedError, match="connect first"):
        labkit.current()
    assert "closed" in repr(remote)


def test_connecting_elsewhere_replaces_the_connection(ray_head, dask_scheduler):
    first = labkit.connect(dask_scheduler.address)
    second = labkit.connect(ray_head.gcs_address, token_file=ray_head.token_file)
    assert first.closed and not second.closed
    assert labkit.current() is second
    assert second.map(abs, [-1], progress=False) == [1]


def test_failed_connect_keeps_the_previous_connection(dask_scheduler):
    from tests.conftest import free_port

    first = labkit.connect(dask_scheduler.address)
    with pytest.raises(labkit.LabkitError):
        labkit.connect(f"tcp://127.0.0.1:{free_port()}", timeout=2)
    assert labkit.current() is first and not first.closed


def test_large_dask_chunks_go_straight_to_a_worker(dask_scheduler, monkeypatch):
    import numpy as np

    cluster = labkit.connect(dask_scheduler.address, timeout=30)
    scattered = []
    scatter = cluster.client.scatter

    def counting_scatter(data, **options):
        scattered.append(data)
        return scatter(data, **options)

    monkeypatch.setattr(cluster.client, "scatter", counting_scatter)
    arrays = [np.full(300_000, float(i)) for i in range(3)]  # 2.4 MB each
    sums = cluster.map(np.sum, arrays, progress=False, chunksize=1)
    assert sums == [0.0, 300_000.0, 600_000.0] and len(scattered) == 3
    assert cluster.map(abs, [-1, -2], progress=False) == [1, 2]
    assert len(scattered) == 3  # small chunks ride inside their tasks


def _nap(x):
    time.sleep(0.1)
    return x


def test_losing_the_dask_scheduler_mid_map_is_an_error_naming_it(tmp_path):
    """The scheduler host goes away while work is outstanding: an error naming its address
    arrives at once (not a hang, not a bare cancelled future), and the client is released."""
    with dask_processes(tmp_path) as remote:
        cluster = labkit.connect(remote.address, timeout=10)
        try:
            stream = cluster.imap_unordered(_nap, range(40), chunksize=1)
            next(stream)  # the map is under way
            remote.scheduler.kill()
            remote.scheduler.wait(10)
            started = time.monotonic()
            with pytest.raises(
                ConnectError, match="lost the connection to the Dask scheduler"
            ) as err:
                list(stream)
            assert remote.address in str(err.value)
            assert time.monotonic() - started < 10  # the client's timeout, not a hang
        finally:
            cluster.close()
