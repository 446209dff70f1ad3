"""The one rule for what a ``cluster=`` / ``on=`` argument means (clusters.spec)."""

from __future__ import annotations

import pytest

import labkit
from labkit.clusters import backends, choose_cluster, using_cluster
from labkit.errors import ClusterSpecError, NotConnectedError, ParameterError, RegistryError
from tests import toy_backend


@pytest.fixture(autouse=True)
def toy(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    toy_backend.register()
    labkit.disconnect()
    yield
    labkit.disconnect()


def test_in_process_and_nothing_active():
    assert choose_cluster(False) == (None, False)
    assert choose_cluster("in-process") == (None, False)
    assert choose_cluster(None) == (None, False)
    with pytest.raises(ParameterError, match="cannot run in-process"):
        choose_cluster(False, required=True)


def test_none_is_the_active_cluster_and_required_connects_a_local_one(monkeypatch):
    monkeypatch.setenv("LABKIT_BACKEND", "toy")
    cluster, owned = choose_cluster(None, required=True)
    assert owned and cluster.backend == "toy"
    assert choose_cluster(None) == (cluster, False)
    assert choose_cluster(True) == (cluster, False)
    assert choose_cluster("local") == (cluster, False)
    assert choose_cluster(cluster) == (cluster, False)
    assert choose_cluster(cluster.address) == (cluster, False)


def test_a_cluster_connected_for_a_step_is_closed_after_it():
    with using_cluster("toy") as cluster:
        assert labkit.current() is cluster
    assert cluster.closed
    with pytest.raises(NotConnectedError, match="was closed"):
        choose_cluster(cluster)


def test_what_is_no_cluster_is_refused_saying_what_would_be():
    with pytest.raises(ParameterError, match="cluster must be a labkit Cluster"):
        choose_cluster(3)
    with pytest.raises(ClusterSpecError, match="no cluster named 'nowhere'") as caught:
        choose_cluster("nowhere")
    assert isinstance(caught.value, ParameterError) and isinstance(caught.value, RegistryError)
