"""SpectrumIndex against exact numpy search and raw pymilvus, on the same data in one run.

N latent vectors of dim 16 (standard normal, like VAE posterior means; isotropic data is the
hard case for approximate search) go into a milvus-lite file through labkit, then:
- recall_at_10: labkit's top 10 for 1000 queries against numpy's exact top 10;
- batch_qps_ratio_vs_numpy: labkit's queries per second for 1000 queries at once over numpy
  brute force (one matrix product, argpartition) for the same 1000 (best of 3 each);
- batch_ratio_vs_pymilvus: labkit's queries per second for the 1000 at once over raw
  ``MilvusClient.search`` asking the same (target >= 0.95), medians over turns that alternate
  the two (labkit, raw, raw, labkit, ...) so a busy machine slows both alike;
- single_ratio_vs_pymilvus: median latency of one ``SpectrumIndex.search`` over one raw
  ``MilvusClient.search`` asking the same of the same collection (calls interleaved);
- p50_ms / p99_ms of single labkit queries, upsert_per_s (labkit, batched), batch_qps.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

DIM = 16
K = 10
BATCH_QUERIES = 1000
BATCH_TURNS = 11  # turns of each of labkit and raw pymilvus


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) + 39_627_000_000_000_000
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    meta = {
        "z": rng.uniform(0, 3.5, n),
        "spectype": np.array(["GALAXY", "QSO", "STAR"])[rng.integers(0, 3, n)],
        "anomaly_score": rng.normal(0, 1, n),
    }
    queries = rng.standard_normal((BATCH_QUERIES, DIM)).astype(np.float32)
    return ids, vectors, meta, queries


def numpy_top_k(vectors: np.ndarray, norms: np.ndarray, queries: np.ndarray, k: int):
    """Exact L2 neighbours: ||x||^2 - 2 q.x (the ||q||^2 term does not change the order)."""
    scores = norms[None, :] - 2.0 * (queries @ vectors.T)
    part = np.argpartition(scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)
    return np.take_along_axis(part, order, axis=1)


def in_turns(first, second, turns: int) -> tuple[list[float], list[float], object]:
    """Seconds per call of ``first`` and of ``second``, called in alternating order; and the
    last answer of ``first``."""
    times: tuple[list[float], list[float]] = ([], [])
    answer = None
    for turn in range(turns):
        for which in (0, 1) if turn % 2 == 0 else (1, 0):
            start = time.perf_counter()
            result = (first, second)[which]()
            times[which].append(time.perf_counter() - start)
            if which == 0:
                answer = result
            del result  # freed outside the timed span
    return times[0], times[1], answer


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k vectors instead of 1M")
    parser.add_argument("--singles", type=int, default=None, help="single queries to time")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    singles = args.singles or 100

    from pymilvus import MilvusClient

    from labkit.vectors import FIELD_NAMES, SpectrumIndex

    ids, vectors, meta, queries = make_data(n)
    work = Path(tempfile.mkdtemp(prefix="labkit-bench-search-"))
    index = SpectrumIndex(work / "bench.db", DIM, timeout=120, build_timeout=3600)
    print(index)

    start = time.perf_counter()
    index.upsert(ids, vectors, meta)
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    index.flush()  # persist and build the HNSW index before searching
    build_s = time.perf_counter() - start
    print(f"upserted {n} rows in {upsert_s:.1f} s, index built in {build_s:.1f} s")

    # raw pymilvus: its own client on the same milvus-lite server, same collection
    raw = MilvusClient(str(index.endpoint.path))
    raw_params = {"params": index._search_params(K)}
    fields = list(FIELD_NAMES)

    def raw_search(batch):
        return raw.search(
            index.collection,
            data=batch,
            limit=K,
            output_fields=fields,
            search_params=raw_params,
            anns_field="vector",
        )

    # the same 1000 queries at once: labkit and raw pymilvus in turns, numpy exact apart
    norms = (vectors.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    index.search(queries[:10], k=K)  # warm up
    raw_search(queries)
    ours_batch, raw_batch, found = in_turns(
        lambda: index.search(queries, k=K), lambda: raw_search(queries), BATCH_TURNS
    )
    labkit_batch_s, raw_batch_s = statistics.median(ours_batch), statistics.median(raw_batch)
    numpy_s, exact = timed(lambda: numpy_top_k(vectors, norms, queries, K), 3)
    found_ids = np.array([[h.id for h in hits] for hits in found])
    exact_ids = ids[exact]
    recall = float(
        np.mean([len(set(a) & set(b)) / K for a, b in zip(found_ids, exact_ids, strict=True)])
    )

    # single queries, labkit and raw interleaved so drift hits both alike
    ours, theirs = [], []
    for q in queries[:singles]:
        start = time.perf_counter()
        index.search(q, k=K)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        raw_search(q[None, :])
        theirs.append(time.perf_counter() - start)
    numpy_single_s, _ = timed(lambda: numpy_top_k(vectors, norms, queries[:1], K), 5)

    ms = np.array(ours) * 1000
    metrics = {
        "n_vectors": n,
        "dim": DIM,
        "recall_at_10": recall,
        "batch_qps": BATCH_QUERIES / labkit_batch_s,
        "batch_qps_numpy": BATCH_QUERIES / numpy_s,
        "batch_qps_pymilvus": BATCH_QUERIES / raw_batch_s,
        "batch_ratio_vs_pymilvus": raw_batch_s / labkit_batch_s,
        "batch_qps_ratio_vs_numpy": numpy_s / labkit_batch_s,
        "single_ratio_vs_pymilvus": statistics.median(ours) / statistics.median(theirs),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "single_ms_pymilvus": statistics.median(theirs) * 1000,
        "single_ms_numpy": numpy_single_s * 1000,
        "upsert_per_s": n / upsert_s,
        "index_build_s": build_s,
    }
    print_table(
        f"labkit.vectors vs raw tools ({n} vectors, dim {DIM}, {index.describe_index()})",
        [
            ("1000 queries, s (vs numpy)", labkit_batch_s, numpy_s, "ratio <= 0.5"),
            ("1000 queries, s (vs pymilvus)", labkit_batch_s, raw_batch_s, "ratio <= 1.05"),
            (
                "one query, ms (vs pymilvus)",
                statistics.median(ours) * 1000,
                statistics.median(theirs) * 1000,
                "ratio <= 1.1",
            ),
            (
                "one query, ms (vs numpy)",
                statistics.median(ours) * 1000,
                numpy_single_s * 1000,
                "(numpy wins at one query)",
            ),
        ],
    )
    print(f"recall@10 {recall:.4f} (target >= 0.99)")
    write_results("search", args.quick, metrics)
    raw.close()
    index.close()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
