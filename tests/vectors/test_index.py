"""SpectrumIndex against real Milvus back-ends: every test runs on an embedded *.db file and
against a `milvus-lite server` process over the network path."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest

from labkit.errors import (
    ConnectError,
    DimensionError,
    FilterError,
    ParameterError,
    UnknownIdError,
    VectorIndexError,
)
from labkit.vectors import SpectrumIndex, schema
from labkit.vectors.index import Hit
from tests.conftest import free_port
from tests.vectors.conftest import random_rows


def brute_force(vectors, queries, k, metric="L2", allowed=None):
    """Exact neighbours (row numbers, distances) in labkit's distance convention."""
    if metric == "L2":
        d = np.sqrt(((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1))
    else:
        a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        b = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1 - b @ a.T
    if allowed is not None:
        d = np.where(allowed[None, :], d, np.inf)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


def test_upsert_twice_leaves_one_row_per_id(open_index):
    ids, vectors, meta = random_rows(120, 6)
    index = open_index(dim=6)
    assert index.upsert(ids, vectors, meta) == 120
    meta["label"] = ["relabelled"] * len(meta)
    index.upsert(ids, vectors + 1, meta, batch_size=50)  # several batches
    assert index.count() == 120
    rows = index.get(ids[[0, 77]])
    assert [r["id"] for r in rows] == ids[[0, 77]].tolist()
    assert all(r["label"] == "relabelled" for r in rows)
    np.testing.assert_allclose(rows[1]["vector"], vectors[77] + 1, rtol=1e-6)
    assert math.isnan(index.get(ids[5])[0]["z"])  # masked redshift stored as NaN
    assert index.get(ids[6])[0]["source_file"] == "coadd-1.fits"


def test_an_upsert_the_server_is_too_slow_for_is_tried_again_with_more_time(
    open_index, monkeypatch
):
    """A stand-in only for the stall (milvus-lite sealing a large collection): the first
    upsert call times out; the retry, with twice the time, reaches the real server."""
    import grpc

    ids, vectors, meta = random_rows(30, 4)
    index = open_index(dim=4)
    real, limits = index._client.upsert, []

    class Deadline(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.DEADLINE_EXCEEDED

    def stalls_once(*args, timeout, **kwargs):
        limits.append(timeout)
        if len(limits) == 1:
            raise Deadline()
        return real(*args, timeout=timeout, **kwargs)

    monkeypatch.setattr(index._client, "upsert", stalls_once)
    assert index.upsert(ids, vectors, meta) == 30
    assert limits == [limits[0], 2 * limits[0]] and index.count() == 30


@pytest.mark.parametrize("metric", ["L2", "COSINE"])
def test_search_equals_brute_force(open_index, metric):
    ids, vectors, meta = random_rows(200, 8, seed=3)
    index = open_index(dim=8, metric=metric)
    index.upsert(ids, vectors, meta)
    queries = np.random.default_rng(9).standard_normal((12, 8)).astype(np.float32)
    hits = index.search(queries, k=7)
    rows, dist = brute_force(vectors, queries, 7, metric)
    assert [[h.id for h in q] for q in hits] == ids[rows].tolist()
    np.testing.assert_allclose([[h.distance for h in q] for q in hits], dist, atol=1e-4)
    first = hits[0][0]
    assert first.meta["spectype"] == meta["spectype"][rows[0, 0]]
    assert first.meta["anomaly_score"] == pytest.approx(meta["anomaly_score"][rows[0, 0]])
    # one 1-D vector is one query
    assert index.search([], k=7) == [] and index.search(np.zeros((0, 8)), k=7) == []
    single = index.search(queries[0], k=7)
    assert len(single) == 1 and [h.id for h in single[0]] == [h.id for h in hits[0]]


def raw_pymilvus(index: SpectrumIndex, queries: np.ndarray, k: int, expression: str = ""):
    """The raw pymilvus call labkit makes, as (ids, labkit distances, metadata) per query."""
    answer = index._client.search(
        index.collection,
        data=np.atleast_2d(queries),
        limit=k,
        filter=expression,
        output_fields=list(schema.FIELD_NAMES),
        search_params={"params": index._search_params(k)},
        anns_field=schema.VECTOR,
        timeout=20,
    )
    convert = {
        "L2": lambda d: math.sqrt(d) if d > 0 else 0.0,
        "COSINE": lambda d: 1.0 - d,
        "IP": lambda d: -d,
    }[index.metric]
    return [
        [(h["id"], convert(h["distance"]), schema.row_meta(h["entity"])) for h in hits]
        for hits in answer
    ]


@pytest.mark.parametrize("metric", ["L2", "COSINE", "IP"])
def test_search_returns_exactly_what_raw_pymilvus_returns(open_index, metric):
    """Batch and single queries, with and without a filter, on the default (HNSW) index:
    the same ids, distances to the last bit, metadata and types as the raw call."""
    ids, vectors, meta = random_rows(300, 6, seed=8)
    index = open_index(dim=6, metric=metric)
    index.upsert(ids, vectors, meta)
    index.flush()
    queries = np.random.default_rng(2).standard_normal((60, 6)).astype(np.float32)
    for batch, expression in (
        (queries, ""),
        (queries, 'spectype == "QSO" and z > 1'),
        (queries[7], ""),
    ):
        got = index.search(batch, k=9, filter=expression or None)
        assert type(got) is list and len(got) == len(np.atleast_2d(batch))
        for hits in got:
            assert type(hits) is list
            for hit in hits:
                assert type(hit) is Hit and type(hit.id) is int and type(hit.distance) is float
                assert type(hit.meta) is dict and tuple(hit.meta) == schema.FIELD_NAMES
        want = raw_pymilvus(index, batch, 9, expression)
        # json: NaN (a masked redshift) equals NaN, floats compared by their repr
        assert json.dumps([[tuple(h) for h in hits] for hits in got]) == json.dumps(want)


def test_search_by_id_finds_others_nearest_first(open_index):
    ids, vectors, meta = random_rows(150, 5, seed=4)
    index = open_index(dim=5)
    index.upsert(ids, vectors, meta)
    hits = index.search([int(ids[3]), int(ids[40])], k=5)
    rows, dist = brute_force(vectors, vectors[[3, 40]], 6)
    assert [[h.id for h in q] for q in hits] == ids[rows[:, 1:]].tolist()  # itself left out
    np.testing.assert_allclose([[h.distance for h in q] for q in hits], dist[:, 1:], atol=1e-4)
    with_self = index.search(int(ids[3]), k=2, exclude_self=False)[0]
    assert with_self[0].id == ids[3] and with_self[0].distance == pytest.approx(0, abs=1e-6)


def test_filters_restrict_results(open_index):
    ids, vectors, meta = random_rows(240, 6, seed=5)
    index = open_index(dim=6)
    index.upsert(ids, vectors, meta)
    queries = vectors[:4] + 0.01
    z = np.ma.filled(meta["z"], np.nan)
    expression = 'z > 1.0 and z < 2.5 and spectype in ["QSO", "STAR"]'
    hits = index.search(queries, k=6, filter=expression)
    allowed = (z > 1.0) & (z < 2.5) & np.isin(meta["spectype"], ["QSO", "STAR"])
    rows, _ = brute_force(vectors, queries, 6, allowed=allowed)
    assert [[h.id for h in q] for q in hits] == ids[rows].tolist()
    for hit in (h for q in hits for h in q):
        assert 1.0 < hit.meta["z"] < 2.5 and hit.meta["spectype"] in ("QSO", "STAR")
    only = index.search(queries[:1], k=50, filter='label == "odd" and anomaly_score > 0')[0]
    expected = {
        int(i)
        for i, lab, s in zip(ids, meta["label"], meta["anomaly_score"], strict=True)
        if lab == "odd" and s > 0
    }
    assert {h.id for h in only} == expected
    by_id = index.search(int(ids[0]), k=5, filter='spectype == "GALAXY"')[0]
    assert by_id and all(h.meta["spectype"] == "GALAXY" for h in by_id)
    columns = index.columns(["z"], filter="z < 0.5")
    assert sorted(columns["id"].tolist()) == sorted(ids[z < 0.5].tolist())


def test_get_delete_count_top_anomalies_drop(open_index):
    ids, vectors, meta = random_rows(60, 4, seed=6)
    index = open_index(dim=4)
    index.upsert(ids, vectors, meta)
    assert index.delete(ids[:10]) == 10
    assert index.count() == 50
    with pytest.raises(UnknownIdError):
        index.get(ids[0])
    assert index.delete(ids[:12], missing_ok=True) == 12
    assert index.count() == 48
    top = index.top_anomalies(5)
    kept = np.argsort(-np.asarray(meta["anomaly_score"][12:]))[:5] + 12
    assert [r["id"] for r in top] == ids[kept].tolist()
    assert [r["anomaly_score"] for r in top] == sorted(
        (r["anomaly_score"] for r in top), reverse=True
    )
    qso_top = index.top_anomalies(3, filter='spectype == "QSO"')
    assert all(r["spectype"] == "QSO" for r in qso_top) and len(qso_top) == 3
    index.drop()
    with pytest.raises(VectorIndexError, match="dropped"):
        index.count()
    again = open_index(dim=4)
    assert again.count() == 0


def test_persists_across_a_new_index_object(open_index, place):
    ids, vectors, meta = random_rows(80, 6, seed=7)
    first = open_index(dim=6, metric="COSINE")
    first.upsert(ids, vectors, meta)
    first.flush()
    before = first.search(vectors[:3], k=4)
    first.close()
    reopened = open_index()  # dim, metric and index type come from the collection
    assert (reopened.dim, reopened.metric, reopened.index_type) == (6, "COSINE", "HNSW")
    assert reopened.count() == 80
    after = reopened.search(vectors[:3], k=4)
    assert [[h.id for h in q] for q in after] == [[h.id for h in q] for q in before]
    assert [[h.meta for h in q] for q in after] == [[h.meta for h in q] for q in before]
    np.testing.assert_allclose(
        [[h.distance for h in q] for q in after],
        [[h.distance for h in q] for q in before],
        atol=1e-5,
    )
    np.testing.assert_allclose(reopened.get(ids[9])[0]["vector"], vectors[9], rtol=1e-6)
    assert "HNSW" in repr(reopened) and "rows=80" in repr(reopened)
    assert ("embedded" if place.kind == "embedded" else "server") in repr(reopened)


def test_persists_for_another_process(tmp_path):
    """A file index written here is read by a fresh Python process once this one lets go."""
    ids, vectors, meta = random_rows(30, 3, seed=8)
    uri = str(tmp_path / "shared.db")
    with SpectrumIndex(uri, 3) as index:
        index.upsert(ids, vectors, meta)
        # while open here, another process is told who holds the file
        held = _run_child(uri)
        assert "IndexUnreachableError" in held and "open in another process" in held
    out = _run_child(uri)
    assert out.split()[-2:] == ["30", str(ids[4])]


def _run_child(uri: str) -> str:
    code = f"""
import sys
from labkit.errors import LabkitError
from labkit.vectors import SpectrumIndex, schema
from labkit.vectors.index import Hit
try:
    index = SpectrumIndex({uri!r})
except LabkitError as exc:
    print(type(exc).__name__, exc)
    sys.exit(0)
ids = sorted(index.columns([])["id"].tolist())
print(index.count(), ids[4])
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


# -- bad input: clear errors naming the value, collection unchanged ---------------------------
def test_wrong_dimension_is_refused_and_changes_nothing(open_index):
    ids, vectors, meta = random_rows(40, 6, seed=10)
    index = open_index(dim=6)
    index.upsert(ids, vectors, meta)
    with pytest.raises(DimensionError, match="dimension 5.*dimension 6") as info:
        index.upsert(ids[:3] + 1, vectors[:3, :5])
    assert (info.value.expected, info.value.got) == (6, 5)
    with pytest.raises(DimensionError, match="query vectors have dimension 7"):
        index.search(np.zeros((2, 7)))
    with pytest.raises(DimensionError, match="holds vectors of dimension 6, not 9"):
        open_index(dim=9)
    assert index.count() == 40
    assert index.search(vectors[:1], k=1, exclude_self=False)[0][0].id == ids[0]


@pytest.mark.parametrize(
    "expression, says",
    [
        ("z >", "z >"),
        ("redshift > 1", "redshift"),
        ("spectype == 3", "spectype"),
        ("z > 1 and and", "and"),
    ],
)
def test_malformed_filter_is_named(open_index, expression, says):
    ids, vectors, meta = random_rows(20, 3, seed=11)
    index = open_index(dim=3)
    index.upsert(ids, vectors, meta)
    with pytest.raises(FilterError) as info:
        index.search(vectors[:1], k=3, filter=expression)
    assert info.value.expression == expression
    assert repr(expression) in str(info.value) and says in str(info.value)
    with pytest.raises(FilterError):
        index.top_anomalies(3, filter=expression)
    with pytest.raises(FilterError, match="must be a Milvus expression string"):
        index.search(vectors[:1], filter=1.5)
    assert index.count() == 20


def test_unknown_ids_are_named_and_nothing_is_deleted(open_index):
    ids, vectors, meta = random_rows(20, 3, seed=12)
    index = open_index(dim=3)
    index.upsert(ids, vectors, meta)
    for call in (
        lambda: index.search([int(ids[0]), 424242], k=2),
        lambda: index.get([424242]),
        lambda: index.delete([int(ids[1]), 424242]),
    ):
        with pytest.raises(UnknownIdError, match="424242") as info:
            call()
        assert info.value.ids == [424242]
    assert index.count() == 20
    assert index.get(ids[1])[0]["id"] == ids[1]


def test_other_bad_values(open_index):
    ids, vectors, meta = random_rows(10, 3, seed=13)
    index = open_index(dim=3)
    bad_calls = [
        (lambda: index.upsert(ids, vectors[:9]), "9 rows for 10 ids"),
        (lambda: index.upsert([1, 1], vectors[:2]), r"repeat.*\[1\]"),
        (lambda: index.upsert([1.5, 2.5], vectors[:2]), "integer target ids"),
        (lambda: index.upsert(ids[:2], [[0, np.nan, 0], [1, 1, 1]]), "NaN or inf in row"),
        (lambda: index.upsert(ids[:1], vectors[:1], {"label": ["x" * 70]}), "longer than"),
        (lambda: index.search(vectors[:1], k=0), "k must be"),
        (lambda: index.top_anomalies(-1), "n must be"),
        (lambda: open_index(dim=3, metric="MANHATTAN"), "MANHATTAN"),
        (lambda: open_index(dim=3, collection="no spaces"), "collection name"),
        (
            lambda: open_index(dim=3, collection=f"{index.collection}_pq", index_type="IVF_PQ"),
            "is not built by",
        ),
    ]
    for call, message in bad_calls:
        with pytest.raises(ParameterError, match=message):
            call()
    assert index.count() == 0
    with pytest.raises(VectorIndexError, match="give dim"):
        open_index(collection="never_made")
    with pytest.raises(ParameterError, match="uses metric L2, not COSINE"):
        open_index(metric="COSINE")


def test_nothing_listening_is_a_connect_error():
    port = free_port()
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}") as info:
        SpectrumIndex(f"http://127.0.0.1:{port}", 4, timeout=2)
    assert info.value.backend == "milvus"


def test_a_silent_server_times_out_instead_of_hanging():
    """Something accepts the connection but never speaks gRPC: bounded by the timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ConnectError, match="within 1.5 s"):
            SpectrumIndex(f"http://127.0.0.1:{port}", 4, timeout=1.5)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def test_bad_uris(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "taken.db").write_text("not a milvus-lite folder")
    for uri in (
        "spectra.txt",
        "ftp://host/x",
        "",
        tmp_path / "file" / "x.db",
        tmp_path / "taken.db",
    ):
        with pytest.raises(ParameterError, match="index URI"):
            SpectrumIndex(uri, 4)
