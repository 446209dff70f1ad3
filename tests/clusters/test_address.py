import pytest

from labkit.clusters.address import parse_address, split_host_port
from labkit.clusters.mapping import plan_chunks
from labkit.errors import ConnectError


@pytest.mark.parametrize(
    ("address", "backend", "kind", "resolved_backend", "resolved"),
    [
        (None, None, "local", "ray", None),
        ("local", "dask", "local", "dask", None),
        ("ray://127.0.0.1:10001", None, "ray-client", "ray", "ray://127.0.0.1:10001"),
        ("127.0.0.1:6379", "ray", "ray-gcs", "ray", "127.0.0.1:6379"),
        ("127.0.0.1:6379", None, "ray-gcs", "ray", "127.0.0.1:6379"),
        ("127.0.0.1:8786", "dask", "dask-scheduler", "dask", "tcp://127.0.0.1:8786"),
        ("tcp://127.0.0.1:8786", None, "dask-scheduler", "dask", "tcp://127.0.0.1:8786"),
        ("dask-1", None, "name", None, "dask-1"),
    ],
)
def test_parse_address(address, backend, kind, resolved_backend, resolved):
    target = parse_address(address, backend)
    assert (target.kind, target.backend, target.address) == (kind, resolved_backend, resolved)


def test_default_backend_comes_from_environment(monkeypatch):
    monkeypatch.setenv("LABKIT_BACKEND", "dask")
    assert parse_address(None).backend == "dask"
    assert parse_address("local", "ray").backend == "ray"


@pytest.mark.parametrize(
    ("address", "backend", "message"),
    [
        ("tcp://127.0.0.1:8786", "ray", "Dask scheduler address"),
        ("ray://127.0.0.1:10001", "dask", "Ray Client address"),
        ("http://127.0.0.1:8265", None, "unknown scheme 'http'"),
        ("ray://nohost", None, "HOST:PORT"),
        (None, "spark", "unknown backend 'spark'"),
    ],
)
def test_contradictory_or_malformed_addresses_are_refused(address, backend, message):
    with pytest.raises(ConnectError, match=message) as info:
        parse_address(address, backend)
    if address:
        assert address in str(info.value)


def test_split_host_port():
    assert split_host_port("tcp://10.0.0.1:8786") == ("10.0.0.1", 8786)
    assert split_host_port("[::1]:6379") == ("::1", 6379)


def test_chunks_cover_every_item_in_order_with_several_per_slot():
    chunks = plan_chunks(1000, slots=2)
    assert [i for chunk in chunks for i in chunk] == list(range(1000))
    assert len(chunks) == 8
    assert plan_chunks(3, slots=8) == [range(0, 1), range(1, 2), range(2, 3)]
    assert plan_chunks(0, slots=2) == []
    assert [len(c) for c in plan_chunks(10, slots=2, chunksize=4)] == [4, 4, 2]
