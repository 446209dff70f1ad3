"""build_index with a real SpectrumVAE: in-process, and in parallel on a real Dask cluster."""

from __future__ import annotations

import numpy as np
import pytest

import labkit
from labkit.errors import CheckpointError, ParameterError, VectorIndexError
from labkit.vectors import SpectrumIndex, build_index, embed, top_anomalies


def test_build_stores_latents_scores_and_meta(model, survey, tmp_path):
    uri = str(tmp_path / "survey.db")
    with build_index(model, survey, uri, batch_size=64, progress=False) as index:
        assert index.dim == model.latent_dim and index.count() == len(survey)
        ids = np.asarray(survey.meta["targetid"])
        stored = index.get(ids)
        np.testing.assert_allclose(
            np.stack([r["vector"] for r in stored]), model.encode(survey), rtol=1e-5, atol=1e-6
        )
        scores = model.anomaly_score(survey)
        np.testing.assert_allclose([r["anomaly_score"] for r in stored], scores, rtol=1e-6)
        assert [r["label"] for r in stored] == list(survey.meta["label"])
        assert [r["spectype"] for r in stored] == list(survey.meta["spectype"])
        np.testing.assert_allclose([r["z"] for r in stored], survey.meta["z"])

        top = index.top_anomalies(4)
        assert [r["id"] for r in top] == ids[np.argsort(-scores)[:4]].tolist()
        # a neighbour query by id answers with spectra of the same kind first
        hits = index.search(int(ids[0]), k=3)[0]
        assert len(hits) == 3 and all(h.id != ids[0] for h in hits)
    assert [r["id"] for r in top_anomalies(uri, 4)] == [r["id"] for r in top]

    # building again replaces rows by id: nothing doubles
    with build_index(model, survey[:40], uri, progress=False) as index:
        assert index.count() == len(survey)


def test_parallel_embedding_on_a_dask_cluster(model, survey, tmp_path, monkeypatch):
    local = embed(model, survey, batch_size=50, progress=False)
    cluster = labkit.connect(backend="dask", workers=2)
    remote = embed(model, survey, batch_size=50, cluster=cluster, progress=False)
    np.testing.assert_allclose(remote[0], local[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(remote[1], local[1], rtol=1e-5, atol=1e-6)

    # build_index(parallel=True) sends its chunks through the active cluster's map
    calls = []
    original = type(cluster).map

    def counting_map(self, fn, items, **kwargs):
        items = list(items)
        calls.append(len(items))
        return original(self, fn, items, **kwargs)

    monkeypatch.setattr(type(cluster), "map", counting_map)
    with build_index(
        model, survey, tmp_path / "p.db", parallel=True, batch_size=60, progress=False
    ) as index:
        assert index.count() == len(survey)
        stored = np.stack([r["vector"] for r in index.get(survey.meta["targetid"])])
    assert calls == [3]  # 150 spectra in chunks of 60
    np.testing.assert_allclose(stored, local[0], rtol=1e-5, atol=1e-6)


def test_bad_inputs_leave_no_index(model, survey, tmp_path):
    uri = str(tmp_path / "bad.db")

    class NoScores:
        def encode(self, spectra):
            return np.zeros((len(spectra), 2), np.float32)

    with pytest.raises(ParameterError, match="anomaly_score"):
        build_index(NoScores(), survey, uri)
    with pytest.raises(ParameterError, match="3 ids for 150 spectra"):
        build_index(model, survey, uri, ids=[1, 2, 3])
    with pytest.raises(ParameterError, match="Spectra"):
        build_index(model, np.zeros((3, 4)), uri)
    from labkit.spectra import Spectra

    other_grid = Spectra(
        survey.wave[:100],
        survey.flux[:, :100],
        survey.ivar[:, :100],
        meta=survey.meta,
        frame="rest",
    )
    with pytest.raises(CheckpointError, match="grid mismatch"):
        build_index(model, other_grid, uri, progress=False)
    with pytest.raises(VectorIndexError, match="give dim"):
        SpectrumIndex(uri)
