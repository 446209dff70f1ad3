"""Package drift between the notebook and a cluster's hosts is named at connect."""

from __future__ import annotations

import pytest

import labkit
from labkit.clusters import host_versions, versions
from labkit.errors import VersionMismatchError

PACKAGES = versions.packages_for("dask")
HERE = {"python": "3.11.9", "cloudpickle": "3.1.0", "numpy": "2.3.1", "labkit": "0.4.0"}
HERE |= {"dask": "2025.9.1", "distributed": "2025.9.1"}


@pytest.mark.parametrize(
    "package, theirs, breaking",
    [
        ("python", "3.10.14", True),
        ("python", "3.11.4", False),
        ("numpy", "1.26.4", True),
        ("numpy", "2.2.0", False),
        ("cloudpickle", "2.2.1", True),
        ("distributed", "2025.7.0", True),
        ("distributed", "2025.9.2", False),
        ("labkit", "0.5.0", False),
        ("labkit", None, True),  # a worker without labkit cannot unpickle labkit's tasks
    ],
)
def test_which_differences_break_tasks(package, theirs, breaking):
    [found] = versions.compare(HERE, {"tcp://h:1": {**HERE, package: theirs}}, PACKAGES)
    assert (found.package, found.breaking) == (package, breaking)
    assert "tcp://h:1" in str(found) and HERE[package] in str(found)


def test_versions_of_each_host_are_read_at_connect_and_shown(dask_scheduler):
    cluster = labkit.connect(dask_scheduler.address)
    [(worker, found)] = cluster.versions.items()
    assert worker.startswith("tcp://127.0.0.1:")
    assert found == host_versions.versions()  # the same environment on both sides
    assert cluster.summary()["versions"] == cluster.versions
    assert "<summary>versions</summary>" in cluster._repr_html_()


def test_a_breaking_drift_is_an_error_naming_host_and_both_versions(dask_scheduler, monkeypatch):
    # a fake only for the notebook side: the worker reports what it really runs
    real = host_versions.versions()
    monkeypatch.setattr(versions, "client_versions", lambda: {**real, "python": "3.9.0"})
    with pytest.raises(VersionMismatchError) as caught:
        labkit.connect(dask_scheduler.address)
    message = str(caught.value)
    assert f"python {real['python']} on tcp://127.0.0.1:" in message
    assert "3.9.0 in this notebook" in message
    with pytest.raises(labkit.errors.NotConnectedError):
        labkit.current()


def test_a_minor_drift_is_one_warning(dask_scheduler, monkeypatch):
    real = host_versions.versions()
    monkeypatch.setattr(versions, "client_versions", lambda: {**real, "labkit": "0.0.1"})
    with pytest.warns(UserWarning, match="minor versions: labkit") as caught:
        cluster = labkit.connect(dask_scheduler.address)
    # other libraries may warn during connect too; the drift itself is said once
    drift = [w for w in caught if "minor versions" in str(w.message)]
    assert len(drift) == 1 and not cluster.closed


def test_ray_nodes_report_their_versions(ray_head):
    cluster = labkit.connect(ray_head.gcs_address, token_file=ray_head.token_file)
    [(node, found)] = cluster.versions.items()
    assert node == "127.0.0.1" and found["ray"] == host_versions.versions()["ray"]
