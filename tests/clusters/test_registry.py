import json

import pytest

import labkit
from labkit.clusters.registry import ClusterEntry, find_cluster, read_registry, write_registry
from labkit.errors import ConnectError, RegistryError


@pytest.fixture
def runtime_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_registry_round_trip(runtime_dir):
    entries = [
        ClusterEntry("c1", "ray-1", "ray", "127.0.0.1:6379", managed=True, pids=[123]),
        ClusterEntry("c2", "dask-1", "dask", "tcp://127.0.0.1:8786"),
    ]
    path = write_registry(entries)
    assert path.parent == runtime_dir
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_registry() == entries
    assert find_cluster("dask-1").address == "tcp://127.0.0.1:8786"
    assert find_cluster("c1").name == "ray-1"


def test_missing_registry_means_no_names(runtime_dir):
    assert read_registry() == []
    with pytest.raises(RegistryError, match="no cluster named 'dask-9'.*known: none"):
        find_cluster("dask-9")


def test_unknown_name_lists_known_ones(runtime_dir):
    write_registry([ClusterEntry("c2", "dask-1", "dask", "tcp://127.0.0.1:8786")])
    with pytest.raises(RegistryError, match="known: dask-1"):
        labkit.connect("dask-2")


def test_malformed_registry_is_reported(runtime_dir):
    (runtime_dir / "labkit-clusters.json").write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read the cluster registry"):
        read_registry()
    (runtime_dir / "labkit-clusters.json").write_text(json.dumps({"clusters": [{"id": "x"}]}))
    with pytest.raises(RegistryError, match="malformed entry"):
        read_registry()


def test_connect_by_name_reaches_the_registered_cluster(runtime_dir, dask_scheduler):
    proxied = "/user/me/labkit/dashboard/c2/status"
    entry = ClusterEntry("c2", "dask-1", "dask", dask_scheduler.address, dashboard_url=proxied)
    write_registry([entry])
    cluster = labkit.connect("dask-1")
    assert cluster.dashboard_url == proxied
    assert cluster.backend == "dask"
    assert cluster.address == dask_scheduler.address
    assert cluster.map(abs, [-1, -2], progress=False) == [1, 2]


def test_connect_by_name_refuses_a_different_backend(runtime_dir, dask_scheduler):
    write_registry([ClusterEntry("c2", "dask-1", "dask", dask_scheduler.address)])
    with pytest.raises(ConnectError, match="'dask-1' is a dask cluster"):
        labkit.connect("dask-1", backend="ray")
