"""SpectrumIndex against exact numpy search and raw pymilvus, on the same data in one run.

N latent vectors of dim 16 (standard normal, like VAE posterior means; isotropic data is the
hard case for approximate search) go into a milvus-lite file through labkit, then:
- recall_at_10: labkit's top 10 for 1000 queries against numpy's exact top 10;
- batch_qps_ratio_vs_numpy: labkit's queries per second for 1000 queries at once over numpy
  brute force (one matrix product, argpartition) for the same 1000 (best of 3 each);
- batch_ratio_vs_pymilvus: labkit's queries per second for the 1000 at once over raw
  ``MilvusClient.search`` (target >= 0.95): the median, over 31 turns, of each turn's paired
  ratio (raw seconds / labkit seconds; a turn runs both, in alternating order), with its
  quartiles and extremes as ``..._q25`` / ``_q75`` / ``_min`` / ``_max``;
- batch_client_cpu_ratio_vs_pymilvus: the same paired median for the CPU seconds of this
  process (raw / labkit), with the index served by a ``milvus-lite server`` process, so that
  the engine's work (which in an embedded *.db runs on threads of this process) is left out
  and what remains is pymilvus's client work plus labkit's own; ``batch_ratio_vs_pymilvus_server``
  is the wall-time ratio of those turns;
- single_ratio_vs_pymilvus: median latency of one ``SpectrumIndex.search`` over one raw
  ``MilvusClient.search`` asking the same of the same collection (calls interleaved);
- p50_ms / p99_ms of single labkit queries, upsert_per_s (labkit, batched), batch_qps.

Like with like: the raw arm calls the very ``MilvusClient`` labkit holds, with the options
labkit passes (``timeout=``, ``filter=""``); in both arms the timed span ends once the answer is
freed (labkit frees pymilvus's answer inside its call, so timing the raw call without that
would bill labkit for pymilvus's objects), and a ``gc.collect()`` precedes each timed call, so
a full collection over the whole process heap (~70 ms here) does not land in one arm by lot.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

DIM = 16
K = 10
BATCH_QUERIES = 1000
BATCH_TURNS = 31  # turns, each timing labkit and raw pymilvus once


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


def in_turns(first: Callable, second: Callable, turns: int) -> list[tuple[float, ...]]:
    """Per turn: wall and CPU seconds of ``first``, then of ``second``, called in alternating
    order. Each call starts after a garbage collection, and its span ends once its answer is
    released: either arm pays for freeing what it made, as a notebook does in the end."""
    out = []
    for turn in range(turns):
        took: dict[int, tuple[float, float]] = {}
        for which in (0, 1) if turn % 2 == 0 else (1, 0):
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            (first, second)[which]()  # the answer is freed here, inside the span
            took[which] = (time.perf_counter() - wall, time.process_time() - cpu)
        out.append((*took[0], *took[1]))
    return out


def paired(name: str, ratios: list[float]) -> dict[str, float]:
    """Median, quartiles and extremes of per-turn paired ratios."""
    q25, median, q75 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {
        name: statistics.median(ratios),
        f"{name}_q25": q25,
        f"{name}_q75": q75,
        f"{name}_min": min(ratios),
        f"{name}_max": max(ratios),
    }


def served(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """``milvus-lite server`` on ``data_dir`` as its own process; returns it and its URI."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (data_dir.parent / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir", str(data_dir)]
        + ["--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"milvus-lite server did not start; see {log.name}") from None
            time.sleep(0.2)


def raw_search_of(index) -> Callable:
    """Raw ``MilvusClient.search`` on the client ``index`` holds, with labkit's options."""
    from labkit.vectors import FIELD_NAMES

    params = {"params": index._search_params(K)}
    fields = list(FIELD_NAMES)
    client, timeout = index._client, index._conn.timeout

    def raw_search(batch):
        return client.search(
            index.collection,
            data=batch,
            limit=K,
            filter="",
            output_fields=fields,
            search_params=params,
            anns_field="vector",
            timeout=timeout,
        )

    return raw_search


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

    from labkit.vectors import SpectrumIndex

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

    # raw pymilvus: the same client, collection and call options as labkit's search
    raw_search = raw_search_of(index)

    # the same 1000 queries at once: labkit and raw pymilvus in turns, numpy exact apart
    norms = (vectors.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    index.search(queries[:10], k=K)  # warm up
    raw_search(queries)
    load_before = os.getloadavg()[0]
    turns = in_turns(lambda: index.search(queries, k=K), lambda: raw_search(queries), BATCH_TURNS)
    labkit_batch_s = statistics.median(t[0] for t in turns)
    raw_batch_s = statistics.median(t[2] for t in turns)
    numpy_s, exact = timed(lambda: numpy_top_k(vectors, norms, queries, K), 3)
    found = index.search(queries, k=K)
    found_ids = np.array([[h.id for h in hits] for hits in found])
    exact_ids = ids[exact]
    recall = float(
        np.mean([len(set(a) & set(b)) / K for a, b in zip(found_ids, exact_ids, strict=True)])
    )
    del found

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

    # the client's CPU: the same index served by its own process, both arms in turns again
    index.close()
    server, uri = served(index.endpoint.path)
    try:
        remote = SpectrumIndex(uri, DIM, timeout=120, build_timeout=3600)
        remote_raw = raw_search_of(remote)
        remote.search(queries, k=K)  # warm up
        remote_raw(queries)
        remote_turns = in_turns(
            lambda: remote.search(queries, k=K), lambda: remote_raw(queries), BATCH_TURNS
        )
        remote.close()
    finally:
        server.terminate()
        server.wait(30)
    load_after = os.getloadavg()[0]

    ms = np.array(ours) * 1000
    metrics = {
        "n_vectors": n,
        "dim": DIM,
        "recall_at_10": recall,
        "batch_qps": BATCH_QUERIES / labkit_batch_s,
        "batch_qps_numpy": BATCH_QUERIES / numpy_s,
        "batch_qps_pymilvus": BATCH_QUERIES / raw_batch_s,
        **paired("batch_ratio_vs_pymilvus", [t[2] / t[0] for t in turns]),
        **paired("batch_client_cpu_ratio_vs_pymilvus", [t[3] / t[1] for t in remote_turns]),
        "batch_client_cpu_ms": statistics.median(t[1] for t in remote_turns) * 1000,
        "batch_client_cpu_ms_pymilvus": statistics.median(t[3] for t in remote_turns) * 1000,
        "batch_ratio_vs_pymilvus_server": statistics.median(t[2] / t[0] for t in remote_turns),
        "batch_turns": BATCH_TURNS,
        "batch_qps_ratio_vs_numpy": numpy_s / labkit_batch_s,
        "single_ratio_vs_pymilvus": statistics.median(ours) / statistics.median(theirs),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "single_ms_pymilvus": statistics.median(theirs) * 1000,
        "single_ms_numpy": numpy_single_s * 1000,
        "upsert_per_s": n / upsert_s,
        "index_build_s": build_s,
        "load_avg_1min_before": load_before,
        "load_avg_1min_after": load_after,
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
    print(
        f"batch ratio vs pymilvus (paired, {BATCH_TURNS} turns): median "
        f"{metrics['batch_ratio_vs_pymilvus']:.3f}, IQR "
        f"{metrics['batch_ratio_vs_pymilvus_q25']:.3f}-{metrics['batch_ratio_vs_pymilvus_q75']:.3f}"
        f"; client CPU ratio {metrics['batch_client_cpu_ratio_vs_pymilvus']:.3f} (target >= 0.95)"
    )
    write_results("search", args.quick, metrics)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
