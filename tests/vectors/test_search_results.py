"""``search`` returns what it returned before the batch speed-up (issue 18): the same Hits,
with the same types, values and order.

``data/search_results.json`` was recorded with the code before the change (one Hit built per
result in Python, metadata copied per hit); re-record with
``python -m tests.vectors.test_search_results DIR`` only when the results are meant to change.
The fixture pins ids and metadata exactly and distances to 1e-6 (the engine's float32 sums may
differ in the last bit on other CPUs); the comparison against the old way of building hits,
from the same server answer, is exact.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labkit.vectors import SpectrumIndex, schema
from labkit.vectors.index import Hit
from tests.vectors.conftest import random_rows

FIXTURE = Path(__file__).parent / "data" / "search_results.json"
METRICS = ("L2", "COSINE", "IP")
DIM = 8


def make_index(index: SpectrumIndex) -> SpectrumIndex:
    ids, vectors, meta = random_rows(150, DIM, seed=11)
    index.upsert(ids, vectors, meta, progress=False)
    index.flush()
    return index


def queries() -> np.ndarray:
    return np.random.default_rng(5).standard_normal((12, DIM)).astype(np.float32)


def cases(index: SpectrumIndex) -> dict[str, list[list[Hit]]]:
    """The searches the fixture records: vectors, vectors with a filter, ids without self."""
    ids = random_rows(150, DIM, seed=11)[0]
    return {
        "vectors": index.search(queries(), k=7),
        "filtered": index.search(queries()[:5], k=4, filter='spectype == "QSO" and z > 1'),
        "ids": index.search(ids[[3, 40, 99]], k=5),
        "one": index.search(queries()[0], k=3),
    }


def as_json(results: list[list[Hit]]) -> list[list[list[Any]]]:
    return [[[hit.id, hit.distance, hit.meta] for hit in hits] for hits in results]


def old_distance(metric: str, raw: float) -> float:
    """``SpectrumIndex._distance`` as it was before the change."""
    if metric == "L2":
        return math.sqrt(raw) if raw > 0 else 0.0
    if metric == "COSINE":
        return 1.0 - float(raw)
    return -float(raw)


def old_search(index: SpectrumIndex, vectors: np.ndarray, k: int) -> list[list[Hit]]:
    """The pre-change loop: one raw pymilvus search, one Hit and one metadata dict per hit."""
    answer = index._client.search(
        index.collection,
        data=vectors,
        limit=k,
        filter="",
        output_fields=list(schema.FIELD_NAMES),
        search_params={"params": index._search_params(k)},
        anns_field=schema.VECTOR,
    )
    metric = index.metric
    return [
        [
            Hit(int(h["id"]), old_distance(metric, h["distance"]), schema.row_meta(h["entity"]))
            for h in hits
        ]
        for hits in answer
    ]


def assert_types(results: list[list[Hit]]) -> None:
    assert type(results) is list
    for hits in results:
        assert type(hits) is list
        for hit in hits:
            assert type(hit) is Hit
            assert type(hit.id) is int and type(hit.distance) is float
            assert type(hit.meta) is dict and tuple(hit.meta) == schema.FIELD_NAMES


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (masked redshifts are stored as NaN)."""
    return json.dumps(a) == json.dumps(b)


@pytest.mark.parametrize("metric", METRICS)
def test_search_matches_recorded_results(open_index, metric):
    index = make_index(open_index(dim=DIM, metric=metric, index_type="BRUTE_FORCE"))
    recorded = json.loads(FIXTURE.read_text())[metric]
    for name, results in cases(index).items():
        assert_types(results)
        got, want = as_json(results), recorded[name]
        assert [[h[0] for h in hits] for hits in got] == [[h[0] for h in hits] for hits in want]
        assert same([[h[2] for h in hits] for hits in got], [[h[2] for h in hits] for hits in want])
        for hits, wanted in zip(got, want, strict=True):
            np.testing.assert_allclose(
                [h[1] for h in hits], [h[1] for h in wanted], rtol=1e-6, atol=1e-6
            )


@pytest.mark.parametrize("metric", METRICS)
def test_batch_search_equals_old_hit_building(open_index, metric):
    index = make_index(open_index(dim=DIM, metric=metric, index_type="BRUTE_FORCE"))
    batch = np.random.default_rng(9).standard_normal((300, DIM)).astype(np.float32)
    results = index.search(batch, k=10)
    assert_types(results)
    reference = old_search(index, batch, 10)
    assert same(as_json(results), as_json(reference))  # exact: json writes floats by repr


def record(directory: Path) -> None:
    """Write the fixture from a fresh embedded index in ``directory``."""
    out = {}
    for metric in METRICS:
        index = SpectrumIndex(
            directory / f"{metric}.db", DIM, f"record_{metric}", metric, index_type="BRUTE_FORCE"
        )
        try:
            out[metric] = {name: as_json(r) for name, r in cases(make_index(index)).items()}
        finally:
            index.close()
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]))
