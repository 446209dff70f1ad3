"""A third backend is one module plus one registration line (tests/toy_backend.py)."""

from __future__ import annotations

import pytest

import labkit
from labkit.clusters import backends, choose_cluster
from tests import toy_backend


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(backends.BACKENDS))
    toy_backend.register()
    yield
    labkit.disconnect()


def test_connect_map_and_scale_a_registered_backend(toy):
    cluster = labkit.connect(backend="toy", workers=3)
    assert cluster.backend == "toy" and labkit.current() is cluster
    assert cluster.resources()["workers"] == 3
    assert cluster.map(lambda x: x * x, range(5), progress=False) == [0, 1, 4, 9, 16]
    cluster.scale(1)
    assert cluster.resources()["cpus"] == 1


def test_the_cluster_rule_knows_the_new_backend_by_name(toy):
    cluster, owned = choose_cluster("toy")
    assert owned and cluster.backend == "toy"
    assert choose_cluster("toy") == (cluster, False)  # the active local toy cluster is reused


def test_unknown_backends_are_refused_with_the_known_ones(toy):
    with pytest.raises(labkit.LabkitError, match="choose one of ray, dask, toy"):
        labkit.connect(backend="nope")
