"""Turn a ``Spectra`` (or a ``SpectraStore``) into the arrays training needs, refusing what
would train garbage.

The model sees two float32 arrays per spectrum set: ``flux`` and ``weight`` (the inverse
variance where a pixel is usable, 0 where it is masked). Masked pixels get flux 0, so whatever
the file held there (NaN included) can never reach the loss.

Training reads its data through a ``ChunkSource``: rows in chunks of ``chunk_rows``, each
handed out as (flux, weight). ``ArraySource`` cuts in-memory arrays into virtual chunks,
``StoreSource`` reads (and checks) one store chunk at a time, so both feed the same batching
rule and a store is never loaded whole. ``Prefetch`` reads the next chunks in a background
thread, at most ``PREFETCH`` ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.errors import TrainingDataError
from labkit.spectra.store import CHUNK_ROWS, is_store

PREFETCH = 2  # chunks read ahead of the one being trained on
SHUFFLE_CHUNKS = 4  # chunks whose training rows are pooled and shuffled together
SAMPLE_ROWS = 16384  # training rows the pixel statistics are computed from

# Relative tolerance on the step in log(wavelength): preprocess writes an exact log grid,
# float32 storage keeps it to ~1e-7; raw instrument grids (linear in Å) miss it by far.
LOG_STEP_RTOL = 1e-3


@dataclass
class TrainingArrays:
    """What every trainer (in-process, Ray worker, Dask worker) consumes."""

    wave: np.ndarray  # (P,) rest-frame Å, uniform in log
    flux: np.ndarray  # (N, P) float32, 0 where masked
    weight: np.ndarray  # (N, P) float32, ivar where usable else 0

    def __len__(self) -> int:
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        return self.flux.shape[1]

    def subset(self, index: np.ndarray) -> TrainingArrays:
        return TrainingArrays(self.wave, self.flux[index], self.weight[index])


def training_arrays(spectra: Any, what: str = "spectra", first_row: int = 0) -> TrainingArrays:
    """Check ``spectra`` (a ``labkit.spectra.Spectra`` after ``preprocess``) and convert it.

    Raises ``TrainingDataError`` naming the problem: not a Spectra, empty, not on one
    log-λ rest-frame grid, NaN/inf in usable pixels, negative or NaN ivar. ``first_row``
    is the row number of ``spectra[0]`` in the data set it comes from (a store chunk's start),
    so errors name the data set's rows.
    """
    for name in ("wave", "flux", "ivar", "mask"):
        if not hasattr(spectra, name):
            raise TrainingDataError(
                f"{what} must be a labkit.spectra.Spectra (wave, flux, ivar, mask, meta); "
                f"got {type(spectra).__name__} without .{name}"
            )
    wave = np.asarray(spectra.wave, dtype=np.float64)
    flux = np.asarray(spectra.flux)
    ivar = np.asarray(spectra.ivar)
    mask = np.asarray(spectra.mask, dtype=bool)
    if flux.ndim != 2 or flux.shape[0] == 0:
        raise TrainingDataError(f"{what} is empty: there is nothing to train on or to score")
    check_grid(wave, flux.shape[1], what)
    _check_rest_frame(spectra, what)
    for name, array in (("ivar", ivar), ("mask", mask)):
        if array.shape != flux.shape:
            raise TrainingDataError(
                f"{what}.{name} has shape {array.shape} but flux has {flux.shape}"
            )
    bad_ivar = ~np.isfinite(ivar) | (ivar < 0)
    bad_ivar &= ~mask
    if bad_ivar.any():
        raise TrainingDataError(
            f"{what} has NaN, inf or negative ivar in unmasked pixels of "
            f"{_rows(bad_ivar, spectra, first_row)}"
        )
    usable = ~mask & (ivar > 0)
    bad_flux = usable & ~np.isfinite(flux)
    if bad_flux.any():
        raise TrainingDataError(
            f"{what} has NaN or inf flux in unmasked pixels of "
            f"{_rows(bad_flux, spectra, first_row)}; "
            "mask those pixels (mask=True, ivar=0) or drop the spectra"
        )
    weight = np.where(usable, ivar, 0).astype(np.float32)
    clean = np.where(usable, flux, 0).astype(np.float32)
    if not usable.any():
        raise TrainingDataError(f"{what} has no usable pixel: every pixel is masked or has ivar 0")
    return TrainingArrays(wave=wave, flux=clean, weight=weight)


def check_grid(wave: np.ndarray, n_pixels: int, what: str = "spectra") -> None:
    """One common grid, increasing and uniform in log λ, as ``labkit.spectra.preprocess`` makes."""
    if wave.ndim != 1 or wave.shape[0] != n_pixels:
        raise TrainingDataError(
            f"{what} are not on one common grid: wave has shape {wave.shape} but each spectrum "
            f"has {n_pixels} pixels; run labkit.spectra.preprocess first"
        )
    if n_pixels < 2:
        raise TrainingDataError(f"{what} have {n_pixels} pixel(s); a spectrum needs at least 2")
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise TrainingDataError(f"{what} have non-finite or non-positive wavelengths")
    steps = np.diff(np.log(wave))
    if np.any(steps <= 0):
        raise TrainingDataError(
            f"{what} are not on one increasing wavelength grid; run labkit.spectra.preprocess first"
        )
    spread = (steps.max() - steps.min()) / steps.mean()
    if spread > LOG_STEP_RTOL:
        raise TrainingDataError(
            f"{what} are not on a log-λ grid (log-step varies by {spread:.1%}): raw instrument "
            "spectra must go through labkit.spectra.preprocess, which puts them in the rest "
            "frame on one common log-λ grid"
        )


def _check_rest_frame(spectra: Any, what: str) -> None:
    # preprocess marks its output; spectra from elsewhere pass on the grid check alone
    frame = getattr(spectra, "frame", None)
    if frame is None:
        meta = getattr(getattr(spectra, "meta", None), "meta", None) or {}
        frame = meta.get("frame", meta.get("FRAME"))
    if frame is not None and str(frame).lower() != "rest":
        raise TrainingDataError(
            f"{what} are in the {frame} frame; run labkit.spectra.preprocess to move them to the "
            "rest frame first"
        )


def _rows(bad: np.ndarray, spectra: Any, first_row: int = 0) -> str:
    rows = np.flatnonzero(bad.any(axis=1))
    shown = ", ".join(str(r + first_row) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    label = f"{len(rows)} spectra (rows {shown})"
    meta = getattr(spectra, "meta", None)
    try:
        ids = [str(meta["targetid"][r]) for r in rows[:5]]
    except (TypeError, KeyError, IndexError):
        return label
    return f"{label}, targetid {', '.join(ids)}" + (", ..." if len(rows) > 5 else "")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split; at least one spectrum stays on each side when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pixel_statistics(arrays: TrainingArrays) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and spread over the spectra that observe each pixel.

    The network works on standardised flux; pixels nobody observes get mean 0, spread 1.
    """
    seen = arrays.weight > 0
    count = seen.sum(axis=0)
    total = np.where(seen, arrays.flux, 0).sum(axis=0, dtype=np.float64)
    mean = np.divide(total, count, out=np.zeros(arrays.n_pixels), where=count > 0)
    deviation = np.where(seen, arrays.flux - mean, 0)
    var = np.divide(
        (deviation.astype(np.float64) ** 2).sum(axis=0),
        count - 1,
        out=np.ones(arrays.n_pixels),
        where=count > 1,
    )
    std = np.sqrt(var)
    floor = max(float(np.median(std[count > 1])) * 1e-3, 1e-6) if (count > 1).any() else 1.0
    std = np.where((count > 1) & (std > floor), std, np.where(count > 1, floor, 1.0))
    return mean.astype(np.float32), std.astype(np.float32)


# -- reading training data chunk by chunk ----------------------------------------------------
class ChunkSource:
    """``n_rows`` spectra on ``wave``, read in chunks of ``chunk_rows`` rows (the last shorter)."""

    wave: np.ndarray
    n_rows: int
    chunk_rows: int

    def __len__(self) -> int:
        return self.n_rows

    @property
    def n_pixels(self) -> int:
        return len(self.wave)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)

    def chunk_slice(self, chunk: int) -> slice:
        start = chunk * self.chunk_rows
        return slice(start, min(start + self.chunk_rows, self.n_rows))

    def read(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``chunk`` as checked (flux, weight) float32 arrays."""
        raise NotImplementedError

    def take(self, chunk: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows`` (numbered within the chunk) of chunk ``chunk``, as copies."""
        flux, weight = self.read(chunk)
        return flux[rows], weight[rows]


class ArraySource(ChunkSource):
    """In-memory arrays as virtual chunks of ``chunk_rows`` rows (the store's default)."""

    def __init__(self, arrays: TrainingArrays, chunk_rows: int | None = None):
        self.wave, self.flux, self.weight = arrays.wave, arrays.flux, arrays.weight
        self.n_rows = len(arrays)
        self.chunk_rows = int(CHUNK_ROWS if chunk_rows is None else chunk_rows)

    def read(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.chunk_slice(chunk)
        return self.flux[rows], self.weight[rows]


class StoreSource(ChunkSource):
    """A ``SpectraStore`` opened by its absolute path (again in each worker), chunk by chunk."""

    def __init__(self, store: Any):
        self.path = Path(store.path).resolve()
        self.n_rows, self.chunk_rows = len(store), store.chunk_rows
        what = f"the store at {self.path}"
        if self.n_rows == 0:
            raise TrainingDataError(f"{what} is empty: there is nothing to train on")
        missing = store.missing_chunks
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise TrainingDataError(
                f"{what} is incomplete: {len(missing)} of {store.n_chunks} chunks are missing "
                f"({shown}); rerun the preprocess call that wrote it"
            )
        self.wave = np.asarray(store.wave, dtype=np.float64)
        check_grid(self.wave, store.n_pixels, what)
        self._store = store

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}  # workers open the store by path

    @property
    def store(self) -> Any:
        if self._store is None:
            from labkit.spectra.store import open_store

            self._store = open_store(self.path)
        return self._store

    def read(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.chunk_slice(chunk)
        what = f"chunk {chunk} (rows {rows.start}-{rows.stop - 1}) of the store at {self.path}"
        arrays = training_arrays(self.store.read_chunk(chunk), what, first_row=rows.start)
        return arrays.flux, arrays.weight


def chunk_source(spectra: Any) -> ChunkSource:
    """A ``SpectraStore`` as a ``StoreSource``; anything else checked by ``training_arrays``.
    A ``ChunkSource`` (what a sweep's trials receive) is used as it is."""
    if isinstance(spectra, ChunkSource):
        return spectra
    if is_store(spectra):
        return StoreSource(spectra)
    return ArraySource(training_arrays(spectra))


def rows_by_chunk(index: np.ndarray, source: ChunkSource) -> list[np.ndarray]:
    """The rows of sorted ``index`` in each chunk, numbered within that chunk."""
    index = np.asarray(index, dtype=np.int64)
    starts = np.arange(source.n_chunks + 1) * source.chunk_rows
    bounds = np.searchsorted(index, starts)
    return [index[bounds[k] : bounds[k + 1]] - starts[k] for k in range(source.n_chunks)]


def sample(source: ChunkSource, index: np.ndarray, seed: int, limit: int) -> TrainingArrays:
    """Up to ``limit`` rows of ``index`` from whole chunks taken in a seeded order.

    Reading few whole chunks is far cheaper than rows scattered over all of them; the rows
    come in that chunk order, so a smaller ``limit`` gives a prefix of a larger one.
    """
    per_chunk = rows_by_chunk(index, source)
    order = np.random.default_rng([seed, 17]).permutation(source.n_chunks)
    picked, total = [], 0
    for chunk in order:
        if total >= limit:
            break
        rows = per_chunk[chunk][: limit - total]
        if len(rows):
            picked.append((int(chunk), rows))
            total += len(rows)
    flux = np.empty((total, source.n_pixels), np.float32)
    weight = np.empty((total, source.n_pixels), np.float32)
    at = 0
    with Prefetch(source.take, picked) as parts:
        for f, w in parts:
            flux[at : at + len(f)], weight[at : at + len(f)] = f, w
            at += len(f)
    return TrainingArrays(source.wave, flux, weight)


_DONE = object()


class Prefetch:
    """``read(*item)`` for each item, in order, in a background thread at most ``depth`` ahead.

    Use as a context manager: leaving it (a stop, Ctrl-C, DDP's truncated epoch) ends the
    thread, and an error in ``read`` is raised where the result would have been taken.
    """

    def __init__(self, read: Callable[..., Any], items: Sequence[tuple], depth: int = PREFETCH):
        self.read, self.items = read, list(items)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._work, name="labkit-prefetch", daemon=True)

    def __enter__(self) -> Iterator[Any]:
        self.thread.start()
        return self._results()

    def __exit__(self, *exc: object) -> None:
        self.closed.set()
        self.thread.join()

    def _put(self, value: Any) -> bool:
        while not self.closed.is_set():
            try:
                self.queue.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self.items:
                if not self._put(self.read(*item)):
                    return
        except BaseException as exc:  # handed to the consumer
            self._put((_DONE, exc))
            return
        self._put((_DONE, None))

    def _results(self) -> Iterator[Any]:
        while True:
            value = self.queue.get()
            if isinstance(value, tuple) and len(value) == 2 and value[0] is _DONE:
                if value[1] is not None:
                    raise value[1]
                return
            yield value


def batches(
    parts: Iterable[tuple[np.ndarray, np.ndarray]],
    size: int,
    generator: torch.Generator | None = None,
    group: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a stream of (flux, weight) parts into batches of ``size`` rows (the last shorter).

    With ``generator``, the rows of every ``group`` (``SHUFFLE_CHUNKS``) parts, and those left
    over from the group before, are shuffled together first; without, rows keep their order.
    """
    group = SHUFFLE_CHUNKS if group is None else group
    carry: list[tuple[np.ndarray, np.ndarray]] = []
    fresh = 0  # parts pooled since the last cut
    for part in parts:
        carry.append(part)
        fresh += 1
        if generator is None or fresh == group:
            flux, weight = _pool(carry, generator)
            whole = len(flux) - len(flux) % size
            for start in range(0, whole, size):
                yield flux[start : start + size], weight[start : start + size]
            carry, fresh = [(flux[whole:], weight[whole:])], 0
    if carry:
        flux, weight = _pool(carry, generator)
        for start in range(0, len(flux), size):
            yield flux[start : start + size], weight[start : start + size]


def _pool(
    parts: list[tuple[np.ndarray, np.ndarray]], generator: torch.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    flux = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    weight = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    if generator is not None and len(flux) > 1:
        order = torch.randperm(len(flux), generator=generator).numpy()
        flux, weight = flux[order], weight[order]
    return flux, weight
