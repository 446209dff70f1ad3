"""``SpectrumIndex``: latent vectors of spectra in a Milvus collection, searchable by vector or id.

The same code serves a ``*.db`` file (milvus-lite inside this process: notebooks, demos,
Binder) and a Milvus server at ``http(s)://host:port`` (milvus-lite's own server, or Milvus).
Every input is checked before anything is sent, so a bad call leaves the collection as it was.

Speed: milvus-lite's engine runs in Python; each search request costs it a fixed ~40-110 ms at
100k rows plus well under 1 ms per query in it, so ``search`` sends many queries per request.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, pairwise, repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from labkit.checks import whole
from labkit.errors import (
    DimensionError,
    FilterError,
    ParameterError,
    UnknownIdError,
    VectorIndexError,
)
from labkit.vectors import schema
from labkit.vectors.backend import (
    Connection,
    is_unreachable,
    parse_uri,
    quiet_pymilvus,
    release_embedded,
    server_message,
    wait_for_embedded_indexing,
)

METRICS = ("L2", "COSINE", "IP")
LITE_INDEX_TYPES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "BRUTE_FORCE")
SERVER_INDEX_TYPES = ("HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "FLAT", "DISKANN")
EXACT_INDEX = {"lite": "BRUTE_FORCE", "server": "FLAT"}
# HNSW at efConstruction 64 builds 100k 16-d vectors in ~7 s on 2 cores; ef 128 at search
# time keeps recall@10 above 0.99 even for isotropic Gaussian latents (the hard case).
BUILD_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 16, "efConstruction": 64},
    "HNSW_SQ": {"M": 16, "efConstruction": 64},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
    "IVF_PQ": {"nlist": 128, "m": 4, "nbits": 8},
}
DEFAULT_EF = 128
DEFAULT_NPROBE = 16
UPSERT_BATCH = 5000
UPSERT_RETRIES = 2  # an upsert by id is idempotent: a stalled server gets 2x, then 4x the time
SEARCH_BATCH = 4096
FETCH_BATCH = 10000
SCAN_AT_ONCE = 200_000  # rows with vectors milvus-lite returns in one query before we page
# Without vectors a row is a few bytes, and milvus-lite reads its whole collection for each
# page (an iterator over 1.6M rows took ~9 minutes): one query is far faster up to here.
SCAN_SCALARS_AT_ONCE = 4_000_000
SCAN_ROWS_PER_S = 10_000  # the least rate a one-query scan is given time for
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

_open_files: dict[Path, int] = {}
_open_lock = threading.Lock()


class Hit(NamedTuple):
    """One neighbour: target id, distance (smaller = closer, for every metric), metadata."""

    id: int
    distance: float
    meta: dict[str, Any]


class SpectrumIndex:
    """A Milvus collection of (target id, latent vector, z, spectype, label, anomaly_score,
    source_file), created on first use.

    ``dim=None`` opens an existing collection with whatever dimension it has. ``metric`` is
    ``"L2"`` (default), ``"COSINE"`` or ``"IP"``; distances come back as Euclidean distance,
    1 - cosine similarity and -inner product, so smaller is always closer. ``index_type`` None
    picks HNSW, the fastest the backend builds; an explicit type must be one it supports.
    Each call to the server is bounded by ``timeout`` seconds, index builds by ``build_timeout``.
    """

    def __init__(
        self,
        uri: str | Path,
        dim: int | None = None,
        collection: str = "spectra",
        metric: str | None = None,
        *,
        index_type: str | None = None,
        index_params: dict[str, Any] | None = None,
        ef: int = DEFAULT_EF,
        nprobe: int = DEFAULT_NPROBE,
        timeout: float = 30.0,
        build_timeout: float = 900.0,
        token: str = "",
    ):
        if not isinstance(collection, str) or not _NAME.match(collection):
            raise ParameterError(
                f"collection name {collection!r}: use letters, digits and underscores, "
                "starting with a letter or underscore"
            )
        if dim is not None:
            whole("dim", dim, 1, 32768)
        if metric is not None and str(metric).upper() not in METRICS:
            raise ParameterError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
        if not timeout or timeout <= 0:
            raise ParameterError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.endpoint = parse_uri(uri)
        self.uri = self.endpoint.uri
        self.collection = collection
        self.ef = int(ef)
        self.nprobe = int(nprobe)
        self.build_timeout = float(build_timeout)
        self._closed = False
        self._dropped = False
        self._conn = Connection(self.endpoint, collection, float(timeout), token)
        if self.endpoint.embedded:
            with _open_lock:
                _open_files[self.endpoint.path] = _open_files.get(self.endpoint.path, 0) + 1
        try:
            exists = self._call("has_collection", self._client.has_collection, collection)
            if exists:
                self._open(dim, metric, index_type)
            else:
                self._create(dim, metric, index_type, index_params)
        except BaseException:
            self.close()
            raise

    # -- opening --------------------------------------------------------------------------
    @property
    def _client(self):
        return self._conn.client

    @property
    def backend(self) -> str:
        """What answers at ``uri``: milvus-lite embedded, milvus-lite's server, or Milvus."""
        version = self._conn.server_version
        if self._conn.lite:
            version = version.replace("milvus_lite-", "milvus-lite ")
            return f"{version}, embedded" if self.endpoint.embedded else f"{version} server"
        return f"Milvus {version} server"

    def _call(self, what: str, fn, *args, **kwargs):
        return self._conn.call(what, fn, *args, **kwargs)

    def _create(self, dim, metric, index_type, index_params) -> None:
        if dim is None:
            raise VectorIndexError(
                f"there is no collection {self.collection!r} at {self.endpoint.shown}; "
                "give dim=... to create it",
                uri=self.uri,
                collection=self.collection,
            )
        self.dim = int(dim)
        self.metric = (metric or "L2").upper()
        kind = "lite" if self._conn.lite else "server"
        supported = LITE_INDEX_TYPES if kind == "lite" else SERVER_INDEX_TYPES
        if index_type is not None:
            if str(index_type).upper() not in supported:
                raise ParameterError(
                    f"index type {index_type!r} is not built by {self.backend}; "
                    f"choose one of {', '.join(supported)}"
                )
            choices = [str(index_type).upper()]
        else:
            choices = ["HNSW", EXACT_INDEX[kind]]
        failures = []
        self._call(
            "create collection",
            self._client.create_collection,
            self.collection,
            schema=schema.milvus_schema(self.dim),
        )
        try:
            for number, choice in enumerate(choices):
                params = dict(BUILD_PARAMS.get(choice, {}))
                if index_params and number == 0:
                    params.update(index_params)
                prepared = self._client.prepare_index_params()
                prepared.add_index(
                    schema.VECTOR, index_type=choice, metric_type=self.metric, params=params
                )
                try:
                    # milvus-lite builds per segment later; waiting here would only poll
                    self._call("release", self._client.release_collection, self.collection)
                    self._call(
                        "create index",
                        self._client.create_index,
                        self.collection,
                        prepared,
                        sync=not self._conn.lite,
                    )
                except VectorIndexError as exc:
                    failures.append(f"{choice}: {exc}")
                    continue
                self._call(
                    "load collection",
                    self._client.load_collection,
                    self.collection,
                    timeout=self.build_timeout,
                )
                self.index_type, self.index_params = choice, params
                self.index_note = "; ".join(failures)
                return
            raise VectorIndexError(
                "no index type could be built: " + " | ".join(failures),
                uri=self.uri,
                collection=self.collection,
            )
        except BaseException:
            self._drop_quietly()  # leave no half-made collection behind
            raise

    def _drop_quietly(self) -> None:
        try:
            with quiet_pymilvus():
                if self._client.has_collection(self.collection, timeout=self._conn.timeout):
                    self._client.drop_collection(self.collection, timeout=self._conn.timeout)
        except Exception:
            pass

    def _open(self, dim, metric, index_type) -> None:
        described = self._call(
            "describe collection", self._client.describe_collection, self.collection
        )
        fields = {f["name"]: f for f in described["fields"]}
        missing = [
            n for n in (schema.PRIMARY, schema.VECTOR, *schema.FIELD_NAMES) if n not in fields
        ]
        if missing:
            raise VectorIndexError(
                f"collection {self.collection!r} at {self.endpoint.shown} is not a labkit "
                f"spectrum index (no field {', '.join(missing)}); pick another collection name",
                uri=self.uri,
                collection=self.collection,
            )
        stored = int(fields[schema.VECTOR]["params"]["dim"])
        if dim is not None and int(dim) != stored:
            raise DimensionError(
                f"collection {self.collection!r} at {self.endpoint.shown} holds vectors of "
                f"dimension {stored}, not {int(dim)}; open it with dim={stored} (or None), or "
                "use another collection",
                expected=stored,
                got=int(dim),
                uri=self.uri,
                collection=self.collection,
            )
        self.dim = stored
        info = (
            self._call(
                "describe index", self._client.describe_index, self.collection, schema.VECTOR
            )
            or {}
        )
        self.metric = str(info.get("metric_type", "L2")).upper()
        self.index_type = str(info.get("index_type", "AUTOINDEX")).upper()
        self.index_params = {
            k: v
            for k, v in info.items()
            if k
            not in {
                "index_type",
                "metric_type",
                "field_name",
                "index_name",
                "total_rows",
                "indexed_rows",
                "pending_index_rows",
                "state",
            }
        }
        self.index_note = ""
        for name, wanted, have in (
            ("metric", metric, self.metric),
            ("index type", index_type, self.index_type),
        ):
            if wanted is not None and str(wanted).upper() != have:
                raise ParameterError(
                    f"collection {self.collection!r} at {self.endpoint.shown} uses {name} "
                    f"{have}, not {str(wanted).upper()}; leave it out to use the stored one, "
                    "or use another collection"
                )
        self._call(
            "load collection",
            self._client.load_collection,
            self.collection,
            timeout=self.build_timeout,
        )

    # -- checking input -------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._dropped:
            raise VectorIndexError(
                f"collection {self.collection!r} at {self.endpoint.shown} was dropped",
                uri=self.uri,
                collection=self.collection,
            )
        if self._closed:
            raise VectorIndexError(
                f"this SpectrumIndex on {self.endpoint.shown} was closed; open a new one",
                uri=self.uri,
                collection=self.collection,
            )

    def _where(self) -> dict[str, str]:
        return {"uri": self.uri, "collection": self.collection}

    def _ids(self, ids: Any, what: str = "ids") -> np.ndarray:
        if isinstance(ids, int | np.integer):
            ids = [ids]
        raw = np.asarray(getattr(ids, "data", ids) if hasattr(ids, "mask") else ids)
        if raw.size == 0:
            return np.zeros(0, dtype=np.int64)
        if raw.ndim != 1 or not (
            np.issubdtype(raw.dtype, np.integer)
            or (raw.dtype == object and all(isinstance(v, int | np.integer) for v in raw))
        ):
            raise ParameterError(
                f"{what} must be a sequence of integer target ids, got {_show(ids)}"
            )
        try:
            return raw.astype(np.int64, casting="unsafe" if raw.dtype == object else "safe")
        except (TypeError, OverflowError):
            raise ParameterError(f"{what} must fit in 64-bit integers, got {_show(ids)}") from None

    def _vectors(self, vectors: Any, what: str, n: int | None = None) -> np.ndarray:
        try:
            array = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise ParameterError(
                f"{what} must be an array of numbers, got {_show(vectors)}"
            ) from None
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2:
            raise ParameterError(f"{what} must be an N x {self.dim} array, got shape {array.shape}")
        if array.shape[0] and array.shape[1] != self.dim:
            raise DimensionError(
                f"{what} have dimension {array.shape[1]}, but collection {self.collection!r} at "
                f"{self.endpoint.shown} holds vectors of dimension {self.dim}",
                expected=self.dim,
                got=int(array.shape[1]),
                **self._where(),
            )
        if n is not None and array.shape[0] != n:
            raise ParameterError(f"{what}: {array.shape[0]} rows for {n} ids")
        bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
        if bad.size:
            raise ParameterError(
                f"{what} hold NaN or inf in row(s) {', '.join(map(str, bad[:5].tolist()))}"
            )
        return array

    def _filter(self, expression: str | None) -> str:
        if expression is None:
            return ""
        if not isinstance(expression, str):
            raise FilterError(
                f"filter must be a Milvus expression string such as 'z > 1.5', got "
                f"{_show(expression)}",
                expression=repr(expression),
                **self._where(),
            )
        return expression.strip()

    def _filter_failed(self, expression: str, error: VectorIndexError) -> Exception:
        """A failed call with a filter: blame the filter when it fails on its own too."""
        try:
            with quiet_pymilvus():
                self._client.query(
                    self.collection,
                    filter=expression,
                    limit=1,
                    output_fields=[schema.PRIMARY],
                    timeout=self._conn.timeout,
                )
        except Exception as probe:
            if not is_unreachable(probe):
                return FilterError(
                    f"filter {expression!r} is not a valid Milvus expression for collection "
                    f"{self.collection!r}: {server_message(probe)}",
                    expression=expression,
                    **self._where(),
                )
        return error

    # -- writing --------------------------------------------------------------------------
    def upsert(
        self,
        ids: Sequence[int] | np.ndarray,
        vectors: np.ndarray,
        meta: Any = None,
        *,
        batch_size: int = UPSERT_BATCH,
        progress: bool | None = None,
    ) -> int:
        """Insert or replace rows by id (idempotent); returns the number of rows written.

        ``meta`` (astropy Table, DataFrame or dict of columns, one row per id) supplies z,
        spectype, label, anomaly_score and source_file; absent columns are stored as NaN / "",
        replacing what an earlier upsert of the same id stored.
        """
        self._check_usable()
        ids = self._ids(ids)
        vectors = self._vectors(vectors, "vectors", n=len(ids))
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            repeated = unique[counts > 1][:5].tolist()
            raise ParameterError(f"ids repeat within one upsert: {repeated}")
        columns = schema.meta_columns(meta, len(ids))
        starts = range(0, len(ids), max(1, int(batch_size)))
        for start in _progress(starts, progress, "upsert"):
            stop = start + batch_size
            rows = [
                {schema.PRIMARY: i, schema.VECTOR: v}
                for i, v in zip(ids[start:stop].tolist(), vectors[start:stop], strict=True)
            ]
            for name, values in columns.items():
                for row, value in zip(rows, values[start:stop], strict=True):
                    row[name] = value
            self._call("upsert", self._client.upsert, self.collection, rows, retries=UPSERT_RETRIES)
        return len(ids)

    def delete(self, ids: Sequence[int] | np.ndarray, *, missing_ok: bool = False) -> int:
        """Remove rows by id; an id the index lacks is an error unless ``missing_ok``."""
        self._check_usable()
        ids = np.unique(self._ids(ids))
        if not missing_ok:
            self._fetch(ids, [schema.PRIMARY])  # raises UnknownIdError before deleting anything
        for start in range(0, len(ids), FETCH_BATCH):
            chunk = ids[start : start + FETCH_BATCH].tolist()
            self._call("delete", self._client.delete, self.collection, ids=chunk)
        return len(ids)

    def flush(self, wait: bool = True) -> None:
        """Persist buffered rows and, with ``wait``, return once the vector index covers them.

        Searches work at any time; until the index is built they scan the new rows exactly,
        which at 100k rows costs seconds per request on milvus-lite.
        """
        self._check_usable()
        self._call("flush", self._client.flush, self.collection, timeout=self.build_timeout)
        if not wait:
            return
        if self.endpoint.embedded and wait_for_embedded_indexing(
            self.endpoint, self.collection, self.build_timeout
        ):
            return
        if self._conn.lite:
            # milvus-lite builds indexes in a background thread it does not report on; a
            # released collection skips that, and load() builds what is missing, synchronously
            self._call("release", self._client.release_collection, self.collection)
            self._call(
                "load", self._client.load_collection, self.collection, timeout=self.build_timeout
            )
            return
        deadline = time.monotonic() + self.build_timeout
        while True:
            info = (
                self._call(
                    "describe index", self._client.describe_index, self.collection, schema.VECTOR
                )
                or {}
            )
            if not info.get("pending_index_rows"):
                return
            if time.monotonic() > deadline:
                raise VectorIndexError(
                    f"the index of {self.collection!r} at {self.endpoint.shown} was not built "
                    f"within {self.build_timeout:g} s",
                    **self._where(),
                )
            time.sleep(0.5)

    def drop(self) -> None:
        """Delete the collection and everything in it; this object is unusable afterwards."""
        self._check_usable()
        self._call("drop collection", self._client.drop_collection, self.collection)
        self._dropped = True

    # -- reading --------------------------------------------------------------------------
    def count(self) -> int:
        """Rows in the collection now (deleted rows excluded)."""
        self._check_usable()
        rows = self._call(
            "count", self._client.query, self.collection, filter="", output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    def get(self, ids: Sequence[int] | np.ndarray | int, *, vectors: bool = True) -> list[dict]:
        """One dict per id, in the order given: id, vector (float32 array) and metadata."""
        self._check_usable()
        ids = self._ids(ids)
        fields = [schema.PRIMARY, *schema.FIELD_NAMES] + ([schema.VECTOR] if vectors else [])
        rows = self._fetch(ids, fields)
        return [rows[i] for i in ids.tolist()]

    def _fetch(self, ids: np.ndarray, fields: list[str]) -> dict[int, dict]:
        found: dict[int, dict] = {}
        unique = np.unique(ids)
        for start in range(0, len(unique), FETCH_BATCH):
            chunk = unique[start : start + FETCH_BATCH].tolist()
            for row in self._call(
                "get", self._client.get, self.collection, ids=chunk, output_fields=fields
            ):
                row = dict(row)
                if schema.VECTOR in row:
                    row[schema.VECTOR] = np.asarray(row[schema.VECTOR], dtype=np.float32)
                found[int(row[schema.PRIMARY])] = row
        missing = [i for i in unique.tolist() if i not in found]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise UnknownIdError(
                f"{len(missing)} id(s) not in collection {self.collection!r} at "
                f"{self.endpoint.shown}: {shown}",
                ids=missing,
                **self._where(),
            )
        return found

    def search(
        self,
        query: Any,
        k: int = 10,
        filter: str | None = None,
        *,
        exclude_self: bool = True,
        progress: bool | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` nearest rows to each query, nearest first: per query a list of Hits.

        ``query`` is one vector or an N x dim float array, or one integer target id or a
        sequence of them (their stored vectors are the queries, and with ``exclude_self`` a
        spectrum is not its own neighbour). ``filter`` is a Milvus expression over the
        metadata fields, e.g. ``'z > 1.5 and spectype == "QSO"'``.
        """
        shape = None if isinstance(query, str) else np.asarray(query)
        if shape is not None and shape.size == 0:
            self._check_usable()
            return []
        if isinstance(query, int | np.integer) or (
            shape is not None and shape.dtype.kind in "iu" and shape.ndim <= 1
        ):
            return self.search_ids(query, k, filter, exclude_self=exclude_self, progress=progress)
        return self.search_vectors(query, k, filter, progress=progress)

    def search_vectors(
        self,
        vectors: Any,
        k: int = 10,
        filter: str | None = None,
        *,
        progress: bool | None = None,
    ) -> list[list[Hit]]:
        """``search`` for query vectors (one, or N x dim)."""
        self._check_usable()
        queries = self._vectors(vectors, "query vectors")
        return self._search(queries, _check_k(k), self._filter(filter), progress)

    def search_ids(
        self,
        ids: Any,
        k: int = 10,
        filter: str | None = None,
        *,
        exclude_self: bool = True,
        progress: bool | None = None,
    ) -> list[list[Hit]]:
        """``search`` for stored spectra by target id: what looks like each of them?"""
        self._check_usable()
        k = _check_k(k)
        expression = self._filter(filter)
        ids = self._ids(ids)
        rows = self._fetch(ids, [schema.PRIMARY, schema.VECTOR])
        queries = (
            np.stack([rows[i][schema.VECTOR] for i in ids.tolist()])
            if len(ids)
            else np.zeros((0, self.dim), np.float32)
        )
        limit = min(k + 1, schema.MAX_K) if exclude_self else k
        results = self._search(queries, limit, expression, progress)
        if exclude_self:
            results = [
                [hit for hit in hits if hit.id != own][:k]
                for own, hits in zip(ids.tolist(), results, strict=True)
            ]
        return results

    def _search(
        self, queries: np.ndarray, limit: int, expression: str, progress: bool | None
    ) -> list[list[Hit]]:
        params = {"params": self._search_params(limit)}
        results: list[list[Hit]] = []
        starts = range(0, len(queries), SEARCH_BATCH)
        for start in _progress(starts, progress, "search"):
            batch = queries[start : start + SEARCH_BATCH]
            try:
                answer = self._call(
                    "search",
                    self._client.search,
                    self.collection,
                    data=batch,
                    limit=limit,
                    filter=expression,
                    output_fields=list(schema.FIELD_NAMES),
                    search_params=params,
                    anns_field=schema.VECTOR,
                )
            except VectorIndexError as exc:
                if expression and type(exc) is VectorIndexError:
                    raise self._filter_failed(expression, exc) from None
                raise
            results.extend(self._hits(answer))
        return results

    def _hits(self, answer: Any) -> list[list[Hit]]:
        """Hits of one pymilvus answer (a ``SearchResult``: per query a ``HybridHits``).

        Profiled on 1000 queries x 10 hits, this is all the client work labkit adds to
        pymilvus's own, so each step runs once over the whole batch, in C where it can: ids
        by ``map(int, ...)``, distances in one numpy call, each Hit by ``tuple.__new__`` (what
        ``Hit._make`` does, without a Python call per hit); then the flat list is cut per
        query. pymilvus already made a fresh metadata dict per hit; those become the Hits'
        ``meta`` as they are when their keys come in schema order, rather than being copied.
        """
        sizes = [len(hits) for hits in answer]
        ids = map(int, chain.from_iterable(hits.ids for hits in answer))
        scores = chain.from_iterable(hits.distances for hits in answer)
        distances = self._distances(np.fromiter(scores, np.float64))
        # iterating a HybridHits materializes it; pymilvus's Hit is a dict whose own
        # __getitem__ is Python code, so dict's is called
        metas = list(map(dict.__getitem__, chain.from_iterable(answer), repeat("entity")))
        if metas and tuple(metas[0]) != schema.FIELD_NAMES:
            metas = [schema.row_meta(m) for m in metas]
        flat = list(map(tuple.__new__, repeat(Hit), zip(ids, distances, metas, strict=True)))
        return [flat[start:stop] for start, stop in pairwise(accumulate(sizes, initial=0))]

    def _search_params(self, limit: int) -> dict[str, Any]:
        if self.index_type.startswith("HNSW"):
            return {"ef": max(self.ef, limit)}
        if self.index_type.startswith("IVF"):
            return {"nprobe": self.nprobe}
        return {}

    def _distances(self, raw: np.ndarray) -> list[float]:
        """Milvus scores (float64) as labkit distances, smaller closer for every metric.

        The same floats as ``math.sqrt(d) if d > 0 else 0.0`` (L2), ``1 - d`` (COSINE) and
        ``-d`` (IP) per score: numpy's sqrt and arithmetic on doubles round alike.
        """
        if self.metric == "L2":
            return np.sqrt(np.where(raw > 0, raw, 0.0)).tolist()
        if self.metric == "COSINE":
            return (1.0 - raw).tolist()
        return (-raw).tolist()

    def columns(
        self,
        fields: Iterable[str] = schema.FIELD_NAMES,
        filter: str | None = None,
        *,
        vectors: bool = False,
    ) -> dict[str, np.ndarray]:
        """Whole columns as arrays (``id`` always, ``vector`` as N x dim when asked), for
        overviews such as a projection of the latent space; row order is the server's."""
        self._check_usable()
        fields = list(fields)
        unknown = [f for f in fields if f not in schema.FIELD_NAMES]
        if unknown:
            raise ParameterError(f"unknown field(s) {unknown}; fields are {schema.FIELD_NAMES}")
        wanted = [schema.PRIMARY, *fields] + ([schema.VECTOR] if vectors else [])
        expression = self._filter(filter)
        try:
            rows = self._scan(wanted, expression)
        except VectorIndexError as exc:
            if expression and type(exc) is VectorIndexError:
                raise self._filter_failed(expression, exc) from None
            raise
        out: dict[str, np.ndarray] = {
            schema.PRIMARY: np.array([r[schema.PRIMARY] for r in rows], dtype=np.int64)
        }
        for name in fields:
            kind = next(f.kind for f in schema.SCALAR_FIELDS if f.name == name)
            out[name] = np.array(
                [r[name] for r in rows], dtype=np.float64 if kind == "float" else object
            )
        if vectors:
            out[schema.VECTOR] = np.asarray(
                [r[schema.VECTOR] for r in rows], dtype=np.float32
            ).reshape(len(rows), self.dim)
        return out

    def _scan(self, fields: list[str], expression: str) -> list[dict]:
        total = self.count()
        at_once = SCAN_AT_ONCE if schema.VECTOR in fields else SCAN_SCALARS_AT_ONCE
        if total <= schema.MAX_K or (self._conn.lite and total <= at_once):
            return self._call(
                "scan",
                self._client.query,
                self.collection,
                filter=expression,
                output_fields=fields,
                limit=max(total, 1),
                timeout=self._conn.timeout + total / SCAN_ROWS_PER_S,  # one answer for it all
            )
        rows: list[dict] = []
        with quiet_pymilvus():
            iterator = self._call(
                "scan",
                self._client.query_iterator,
                self.collection,
                batch_size=schema.MAX_K,
                filter=expression,
                output_fields=fields,
            )
            try:
                while batch := self._conn.call("scan", lambda timeout: iterator.next()):
                    rows.extend(batch)
            finally:
                iterator.close()
        return rows

    def top_anomalies(self, n: int = 10, filter: str | None = None) -> list[dict]:
        """The ``n`` rows with the highest anomaly score (highest first), as dicts of id and
        metadata; rows without a score are left out."""
        n = whole("n", n, 0)
        scores = self.columns(["anomaly_score"], filter)
        finite = np.isfinite(scores["anomaly_score"])
        ids, values = scores["id"][finite], scores["anomaly_score"][finite]
        order = np.lexsort((ids, -values))[: int(n)]
        return self.get(ids[order], vectors=False) if len(order) else []

    # -- life cycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Let go of the connection (and, for a file, of its lock once no index here uses it)."""
        if self._closed:
            return
        self._closed = True
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
        if self.endpoint.embedded and conn is not None:
            with _open_lock:
                left = _open_files.get(self.endpoint.path, 1) - 1
                if left <= 0:
                    _open_files.pop(self.endpoint.path, None)
                else:
                    _open_files[self.endpoint.path] = left
            if left <= 0:
                release_embedded(self.endpoint)

    def __enter__(self) -> SpectrumIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe_index(self) -> str:
        """Index type with its build parameters and the search-time ones labkit sends."""
        parts = [f"{k}={v}" for k, v in self.index_params.items()]
        parts += [f"{k}={v}" for k, v in self._search_params(10).items()]
        return f"{self.index_type}({', '.join(parts)})" if parts else self.index_type

    def __repr__(self) -> str:
        if self._dropped or self._closed:
            rows = "dropped" if self._dropped else "closed"
        else:
            try:
                rows = f"rows={self.count()}"
            except VectorIndexError:
                rows = "rows=?"
        return (
            f"SpectrumIndex({self.endpoint.shown!r}, collection={self.collection!r}, "
            f"dim={self.dim}, metric={self.metric}, index={self.describe_index()}, {rows}; "
            f"{self.backend}"
            + (f"; fell back after {self.index_note}" if self.index_note else "")
            + ")"
        )


def _check_k(k: Any) -> int:
    return whole("k", k, 1, schema.MAX_K)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _progress(items: range, progress: bool | None, desc: str):
    """A tqdm bar over batches when there is more than one (or when asked)."""
    show = len(items) > 1 if progress is None else progress
    if not show:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")
