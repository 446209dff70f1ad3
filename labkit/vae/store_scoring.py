"""A trained model over a ``SpectraStore``: latents and anomaly scores, chunk by chunk.

Each task opens the store by path, reads one chunk and returns only that chunk's latent
means and scores; the model reaches workers as a file beside the store (loaded once per
worker process), so neither pixels nor the model travel per task.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from labkit.clusters import ClusterSpec, using_cluster
from labkit.clusters.mapping import in_order
from labkit.spectra.store import SpectraStore, open_store


@functools.lru_cache(maxsize=4)
def _model_at(path: str) -> Any:
    import torch

    from labkit.vae.model import SpectrumVAE

    torch.set_num_threads(1)  # one task per core: threads would only fight over it
    return SpectrumVAE.load(path)


def _chunk_outputs(model: Any, spectra: Any, scores: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if scores:
        return model.encode_and_score(spectra)
    return model.encode(spectra, progress=False), None


def _task(model_path: str, store_path: str, scores: bool, chunk: int):
    spectra = open_store(store_path).read_chunk(chunk)
    return _chunk_outputs(_model_at(model_path), spectra, scores)


@contextmanager
def _model_file(model: Any, store: SpectraStore) -> Iterator[str]:
    """The model saved where every worker that sees the store sees it too."""
    folder = Path(tempfile.mkdtemp(prefix=".model-", dir=store.path))
    try:
        yield str(model.save(folder / "model.pt"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def over_store(
    model: Any,
    store: SpectraStore,
    *,
    scores: bool = True,
    cluster: ClusterSpec = None,
    progress: bool = True,
    desc: str = "score",
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(chunk, latent means, anomaly scores or None) for every chunk, in chunk order.

    On the active cluster (``cluster=None``) if there is one; ``cluster=False`` here (a
    ``ClusterSpec``: a backend name, address or cluster name is connected for the call).
    """
    from tqdm.auto import tqdm

    model.check_grid(store.wave)
    store._check_complete("it")
    chunks = list(range(store.n_chunks))
    with (
        using_cluster(cluster) as chosen,
        tqdm(total=len(store), desc=desc, unit="spectrum", disable=not progress) as bar,
    ):
        if chosen is None:
            for chunk in chunks:
                latents, values = _chunk_outputs(model, store.read_chunk(chunk), scores)
                bar.update(len(latents))
                yield chunk, latents, values
            return
        with _model_file(model, store) as path:
            task = functools.partial(_task, path, str(store.path.resolve()), scores)

            def arriving():
                for chunk, (latents, values) in chosen.imap_unordered(task, chunks, chunksize=1):
                    bar.update(len(latents))
                    yield chunk, (chunk, latents, values)

            yield from in_order(arriving())


def encode_store(model: Any, store: SpectraStore, **options: Any) -> np.ndarray:
    parts = [latents for _, latents, _ in over_store(model, store, scores=False, **options)]
    return np.concatenate(parts)


def score_store(model: Any, store: SpectraStore, **options: Any) -> np.ndarray:
    parts = [values for _, _, values in over_store(model, store, **options)]
    return np.concatenate(parts)
