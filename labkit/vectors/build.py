"""Embed spectra with a trained encoder and store latent means plus anomaly scores in an index.

Encoding is cheap per spectrum but the flux arrays are large, so big inputs go to the active
cluster in chunks (each worker gets the model once per chunk and only its rows of flux); small
ones run here, batch by batch, where shipping data would cost more than it saves.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from labkit.checks import whole
from labkit.clusters import choose_cluster
from labkit.errors import ParameterError
from labkit.spectra.store import is_store
from labkit.vectors.index import SpectrumIndex

EMBED_BATCH = 2048
PARALLEL_FROM = 50_000  # spectra; below this a local encoder beats shipping flux to workers


def build_index(
    model: Any,
    spectra: Any,
    uri: str | Path,
    *,
    collection: str = "spectra",
    metric: str | None = None,
    ids: Any = None,
    batch_size: int = EMBED_BATCH,
    parallel: bool | None = None,
    progress: bool = True,
    **index_options: Any,
) -> SpectrumIndex:
    """Encode ``spectra`` with ``model`` and upsert them (by target id) into an index at ``uri``.

    ``model`` needs ``encode(spectra)`` (N x latent float32) and ``anomaly_score(spectra)``
    (N floats), as ``labkit.vae.SpectrumVAE`` has; ``spectra`` are on the model's grid (after
    ``labkit.spectra.preprocess``), and their ``meta`` gives ``targetid`` (unless ``ids``),
    z, spectype, label and source file. ``parallel`` None uses the active cluster for inputs of
    ``PARALLEL_FROM`` spectra or more; True uses it whatever the size (in-process when none is
    attached); False never. Returns the open ``SpectrumIndex``, flushed and indexed.
    """
    for method in ("encode", "anomaly_score"):
        if not callable(getattr(model, method, None)):
            raise ParameterError(
                f"model must have .{method}(spectra) like labkit.vae.SpectrumVAE; "
                f"got {type(model).__name__}"
            )
    if is_store(spectra):
        return _build_from_store(
            model, spectra, uri, collection, metric, progress, parallel, index_options
        )
    n = _length(spectra)
    meta = getattr(spectra, "meta", None)
    if ids is None:
        if meta is None or "targetid" not in _names(meta):
            raise ParameterError("spectra.meta has no 'targetid' column; pass ids=... instead")
        ids = np.asarray(meta["targetid"])
    if len(ids) != n:
        raise ParameterError(f"{len(ids)} ids for {n} spectra")
    batch_size = whole("batch_size", batch_size, 1)

    cluster = None
    if parallel or (parallel is None and n >= PARALLEL_FROM):
        cluster, _ = choose_cluster(None)  # the active cluster, if any; never a new one
    latents, scores = embed(
        model, spectra, batch_size=batch_size, cluster=cluster, progress=progress
    )
    columns = {} if meta is None else {name: meta[name] for name in _names(meta)}
    columns["anomaly_score"] = scores
    dim = int(latents.shape[1])
    index = SpectrumIndex(uri, dim, collection, metric, **index_options)
    try:
        index.upsert(ids, latents, columns, progress=progress if n > 0 else False)
        index.flush()
    except BaseException:
        index.close()
        raise
    return index


def _build_from_store(
    model: Any,
    store: Any,
    uri: str | Path,
    collection: str,
    metric: str | None,
    progress: bool,
    parallel: bool | None,
    index_options: dict[str, Any],
) -> SpectrumIndex:
    """Chunk by chunk: each chunk's latents and scores (made on the active cluster unless
    ``parallel=False``) go into the index as they arrive, with that chunk's metadata."""
    from labkit.vae.store_scoring import over_store

    cluster = False if parallel is False else None
    index = None
    try:
        for chunk, latents, scores in over_store(
            model, store, cluster=cluster, progress=progress, desc="index"
        ):
            meta = store.chunk_meta(chunk)
            columns = {name: meta[name] for name in meta.colnames}
            columns["anomaly_score"] = scores
            if index is None:
                index = SpectrumIndex(
                    uri, int(latents.shape[1]), collection, metric, **index_options
                )
            index.upsert(np.asarray(meta["targetid"]), latents, columns, progress=False)
        index.flush()
    except BaseException:
        if index is not None:
            index.close()
        raise
    return index


def embed(
    model: Any,
    spectra: Any,
    *,
    batch_size: int = EMBED_BATCH,
    cluster: Any = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(latent means N x d float32, anomaly scores N float64), in the order of ``spectra``."""
    n = _length(spectra)
    starts = list(range(0, n, batch_size))
    if cluster is not None and len(starts) > 1:
        parts = cluster.map(
            functools.partial(_embed_rows, model),
            [_rows(spectra, s, s + batch_size) for s in starts],
            progress=progress,
            chunksize=1,
            desc="embed",
        )
    else:
        batches = starts
        if progress and len(starts) > 1:
            from tqdm.auto import tqdm

            batches = tqdm(starts, desc="embed", unit="batch")
        parts = [_embed_rows(model, _rows(spectra, s, s + batch_size)) for s in batches]
    if not parts:
        raise ParameterError("there are no spectra to embed")
    latents = np.concatenate([p[0] for p in parts]).astype(np.float32)
    scores = np.concatenate([p[1] for p in parts]).astype(np.float64)
    return latents, scores


def _embed_rows(model: Any, rows: Any) -> tuple[np.ndarray, np.ndarray]:
    latents = np.asarray(model.encode(rows), dtype=np.float32)
    scores = np.asarray(model.anomaly_score(rows), dtype=np.float64).reshape(-1)
    n = _length(rows)
    if latents.ndim != 2 or latents.shape[0] != n or scores.shape[0] != n:
        raise ParameterError(
            f"the model returned latents of shape {latents.shape} and {scores.shape[0]} scores "
            f"for {n} spectra; expected N x latent_dim and N"
        )
    return latents, scores


def _rows(spectra: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a Spectra (its own slicing when it has one)."""
    try:
        part = spectra[start:stop]
        if _length(part) == min(stop, _length(spectra)) - start:
            return part
    except Exception:
        pass
    meta = getattr(spectra, "meta", None)
    return SimpleNamespace(
        wave=spectra.wave,
        flux=spectra.flux[start:stop],
        ivar=spectra.ivar[start:stop],
        mask=spectra.mask[start:stop],
        meta=None if meta is None else meta[start:stop],
    )


def _length(spectra: Any) -> int:
    flux = getattr(spectra, "flux", None)
    if flux is None or np.ndim(flux) != 2:
        raise ParameterError(
            "spectra must be a labkit.spectra.Spectra (wave, flux N x P, ivar, mask, meta); "
            f"got {type(spectra).__name__}"
        )
    return int(np.shape(flux)[0])


def _names(meta: Any) -> list[str]:
    if hasattr(meta, "colnames"):
        return list(meta.colnames)
    if hasattr(meta, "columns"):
        return [str(c) for c in meta.columns]
    return list(meta)


def top_anomalies(
    index: SpectrumIndex | str | Path, n: int = 10, filter: str | None = None, **open_options: Any
) -> list[dict]:
    """``SpectrumIndex.top_anomalies`` for an open index or a URI."""
    if isinstance(index, SpectrumIndex):
        return index.top_anomalies(n, filter)
    with SpectrumIndex(index, **open_options) as opened:
        return opened.top_anomalies(n, filter)
