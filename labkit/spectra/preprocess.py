"""``preprocess``: observed spectra -> rest-frame, common log-λ grid, normalised.

Per spectrum: move the grid's pixel edges to the observed frame (λ_obs = λ_rest (1+z)),
resample flux and ivar flux-conservingly (``resample.py``), convert to rest-frame flux
density (f_rest = f_obs (1+z)), then divide by a robust level (the median of the usable
pixels), kept as ``meta['norm']``. Work goes in row chunks, in-process or on a cluster, a
bounded number at a time, so memory stays flat however many spectra there are.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import units as u

from labkit.checks import whole
from labkit.clusters import Cluster, ClusterSpec, using_cluster
from labkit.clusters.mapping import in_order
from labkit.errors import MissingRedshiftError, ParameterError, SpectraError, SpectraWarning
from labkit.spectra.container import Spectra
from labkit.spectra.grids import as_angstrom, check_wave, log_grid, pixel_edges
from labkit.spectra.resample import place, resample_windows

CHUNK_BYTES = 8 * 2**20  # input data per chunk in-process (about 100 DESI spectra)
CLUSTER_CHUNK_BYTES = 64 * 2**20  # at most this per chunk sent to a worker
CHUNKS_PER_SLOT = 4  # chunks per worker slot when a survey is split for a cluster
IN_FLIGHT_PER_SLOT = 8  # chunks sent per worker slot before waiting for results
IN_FLIGHT_BYTES = 2**30  # and at most this much data travelling at once
TRAINING_DLOG = 5.5e-4  # dex per pixel of the default grid: what training is measured on


def rest_grid(start: Any, stop: Any, dlog: float = TRAINING_DLOG) -> np.ndarray:
    """A rest-frame log-λ grid (Å) from ``start`` to ``stop`` with ``dlog`` dex per pixel.

    Pixels sit at 10**(k·dlog) for integer k, so grids for different ranges line up.
    """
    return log_grid(start, stop, dlog)


TRAINING_GRID = rest_grid(900.0, 9800.0)  # ~1900 pixels: quasars to z ~ 4, stars, galaxies


@dataclass
class Block:
    """What a worker needs for one chunk of rows (masked pixels have ivar 0, as in Spectra)."""

    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    z: np.ndarray
    grid: np.ndarray

    def __sizeof__(self) -> int:  # what schedulers (dask.sizeof) see of its size
        return _nbytes(self.wave, self.flux, self.ivar, self.z, self.grid)


@dataclass
class Windows:
    """A chunk's result: each row's window of the grid, starting at pixel ``first``.

    Workers send windows, not whole rows: a redshifted spectrum covers only part of a wide
    rest-frame grid, so this is a fraction of the data to ship back.
    """

    first: np.ndarray  # (N,) first grid pixel of each row's window
    flux: np.ndarray  # (N, W) float32
    ivar: np.ndarray  # (N, W) float32
    masked: np.ndarray  # (N, W) bool, not usable (as the driver stores it: no inversion there)
    norm: np.ndarray  # (N,) rest-frame flux level divided out; NaN for rows with no usable pixel

    def __sizeof__(self) -> int:
        return _nbytes(self.first, self.flux, self.ivar, self.masked, self.norm)

    def place(self, flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, norm: np.ndarray) -> None:
        """Write into (N, M) arrays prepared as zeros, zeros, ones (masked) and (N,)."""
        place(self.first, self.flux, flux)
        place(self.first, self.ivar, ivar)
        place(self.first, self.masked, mask)
        norm[:] = self.norm


def _nbytes(*arrays: np.ndarray) -> int:
    return sum(array.nbytes for array in arrays)


def process_block(block: Block) -> Windows:
    """Rest-frame flux, ivar and masked pixels of one chunk, normalised (runs on a worker)."""
    scale = 1.0 + np.where(np.isfinite(block.z), block.z, 0.0)
    first, width, blocks = resample_windows(
        block.wave, block.flux, block.ivar, block.ivar <= 0, pixel_edges(block.grid), scale
    )
    n = len(first)
    result = Windows(
        first,
        np.empty((n, width), np.float32),
        np.empty((n, width), np.float32),
        np.empty((n, width), bool),
        np.empty(n),
    )
    for rows, flux, ivar, ok in blocks:
        masked = np.logical_not(ok, out=result.masked[rows])
        # normalising makes the rest-frame factor f_rest = f_obs (1+z) cancel; it stays in norm
        level = robust_level(flux, masked)
        np.divide(flux, level[:, None], out=result.flux[rows], casting="same_kind")
        np.multiply(ivar, (level**2)[:, None], out=result.ivar[rows], casting="same_kind")
        result.norm[rows] = np.where(ok.any(axis=1), level * scale[rows], np.nan)
    return result


def robust_level(flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row: median of unmasked flux; else median |flux|; else 1 (all masked or zero).

    Masked pixels are set alternately to -inf and +inf, which leaves a row's median at the
    median of its unmasked pixels, so one vectorised ``np.median`` serves all rows.
    """
    level = _masked_median(flux, mask)
    weak = ~(level > 0)
    if weak.any():
        level[weak] = _masked_median(np.abs(flux[weak]), mask[weak])
    level[~(np.isfinite(level) & (level > 0))] = 1.0
    return level


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    odd = np.cumsum(mask, axis=1, dtype=np.uint8) & 1  # parity of the masked pixel's rank
    work = np.where(mask, np.where(odd, -np.inf, np.inf), values)
    middle = work.shape[1] // 2
    work.partition(middle, axis=1)
    level = work[:, middle]
    level[mask.all(axis=1)] = np.nan
    return level


def _check_grid(grid: Any) -> np.ndarray:
    try:
        return check_wave(as_angstrom(grid, "grid"), "grid")
    except SpectraError as exc:
        raise ParameterError(str(exc)) from None


def default_grid(spectra: Spectra) -> np.ndarray:
    """The rest-frame range any spectrum reaches, at ``TRAINING_DLOG`` (or the data's step if
    coarser): finer grids train several times slower and model noise, not more physics."""
    z = np.ma.filled(np.ma.asarray(spectra.meta["z"], dtype=np.float64), np.nan)
    z = z[np.isfinite(z)]
    if z.size == 0:
        z = np.zeros(1)
    native = float(np.median(np.diff(np.log10(spectra.wave))))
    return log_grid(
        spectra.wave[0] / (1 + z.max()),
        spectra.wave[-1] / (1 + z.min()),
        max(native, TRAINING_DLOG),
    )


def _redshifts(spectra: Spectra) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(spectra.meta["z"], dtype=np.float64), np.nan)


def _usable_redshifts(spectra: Spectra) -> np.ndarray:
    """z per row; raises naming target ids for usable rows without a (sane) redshift."""
    if spectra.frame != "observed":
        raise SpectraError("these spectra are already in the rest frame (preprocessed)")
    z = _redshifts(spectra)
    usable = (~spectra.mask & (spectra.ivar > 0)).any(axis=1)
    missing = usable & ~np.isfinite(z)
    ids = np.asarray(spectra.meta["targetid"])
    if missing.any():
        bad = ids[missing]
        shown = ", ".join(map(str, bad[:10])) + (
            f" and {bad.size - 10} more" if bad.size > 10 else ""
        )
        raise MissingRedshiftError(
            f"{bad.size} spectra have no redshift, so cannot be moved to the rest frame: "
            f"targetid {shown}. Give redshifts with read(..., redshifts=FILE_OR_TABLE) "
            "or drop them",
            targetids=[int(t) for t in bad],
        )
    impossible = usable & (z <= -1)
    if impossible.any():
        shown = ", ".join(map(str, ids[impossible][:10]))
        raise SpectraError(f"redshift z <= -1 is impossible; targetid {shown}")
    return z


def _chunk_size(n: int, n_in: int, slots: int) -> int:
    """Rows per chunk: cache-friendly in-process; on a cluster few enough chunks that Ray's
    per-task cost stays small, yet CHUNKS_PER_SLOT per slot so the work balances."""
    row_bytes = n_in * 9  # float32 flux and ivar, bool mask
    if slots == 0:
        return int(np.clip(CHUNK_BYTES // row_bytes, 8, 4096))
    even = -(-n // (slots * CHUNKS_PER_SLOT))
    return int(np.clip(even, 8, max(8, CLUSTER_CHUNK_BYTES // row_bytes)))


def _slots(cluster: Cluster | None) -> int:
    return 0 if cluster is None else max(1, int(cluster.resources()["cpus"]))


def preprocess_chunks(
    chunks: Iterable[Spectra],
    grid: Any,
    cluster: ClusterSpec = None,
    *,
    progress: bool = True,
    total: int | None = None,
) -> Iterator[Spectra]:
    """Preprocess a stream of ``Spectra`` chunks, yielding each result in order.

    For surveys larger than memory: feed chunks (e.g. files read one by one), consume the
    results as they come. ``grid`` is required, as no chunk sees the whole survey.
    ``total`` (number of spectra, if known) sizes the progress bar. ``cluster`` as for
    ``preprocess``.
    """
    if grid is None:
        raise ParameterError("preprocess_chunks needs a grid; make one with rest_grid(start, stop)")
    grid = _check_grid(grid)
    with using_cluster(cluster) as chosen:
        stream = _stream(chunks, grid, chosen, _slots(chosen), progress, total)
        pairs = ((position, (chunk, result)) for position, chunk, result in stream)
        for chunk, result in in_order(pairs):
            yield _rest_frame(chunk, result, grid)


def _rest_frame(chunk: Spectra, result: Windows, grid: np.ndarray) -> Spectra:
    n = len(chunk)
    flux = np.zeros((n, grid.size), dtype=np.float32)
    ivar = np.zeros((n, grid.size), dtype=np.float32)
    mask = np.ones((n, grid.size), dtype=bool)
    meta = chunk.meta.copy()
    norm = np.empty(n)
    result.place(flux, ivar, mask, norm)
    meta["norm"] = norm
    meta.meta["frame"] = "rest"
    return Spectra._trusted(
        grid, flux, ivar, mask, meta, flux_unit=u.dimensionless_unscaled, frame="rest"
    )


def _stream(
    chunks, grid, cluster, slots, progress, total, checked=False
) -> Iterator[tuple[int, Spectra, Windows]]:
    """(position, chunk, result) as results arrive; a bounded number of chunks in flight.

    ``checked``: the caller already refused rows without usable redshifts.
    """
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="preprocess", unit="spectrum", disable=not progress) as bar:
        pending: list[tuple[Spectra, Block]] = []
        position = 0
        for chunk in chunks:
            if not isinstance(chunk, Spectra):
                raise ParameterError(f"preprocess needs Spectra, got {type(chunk).__name__}")
            z = _redshifts(chunk) if checked else _usable_redshifts(chunk)
            pending.append((chunk, Block(chunk.wave, chunk.flux, chunk.ivar, z, grid)))
            if len(pending) >= _window(slots, chunk, grid):
                yield from _run(pending, position, cluster, bar)
                position += len(pending)
                pending = []
        if pending:
            yield from _run(pending, position, cluster, bar)


def _window(slots: int, chunk: Spectra, grid: np.ndarray) -> int:
    """Chunks to send before collecting: a few per worker slot, within IN_FLIGHT_BYTES."""
    if slots == 0:
        return 1
    size = len(chunk) * (chunk.n_pixels + grid.size) * 9  # float32 flux and ivar, bool mask
    return int(np.clip(IN_FLIGHT_BYTES // max(size, 1), 1, IN_FLIGHT_PER_SLOT * slots))


def _run(pending, offset, cluster, bar) -> Iterator[tuple[int, Spectra, Windows]]:
    blocks = [block for _, block in pending]
    if cluster is None:
        results = enumerate(map(process_block, blocks))
    else:
        results = cluster.imap_unordered(process_block, blocks, chunksize=1)
    for index, result in results:
        chunk = pending[index][0]
        bar.update(len(chunk))
        yield offset + index, chunk, result


def preprocess(
    spectra: Any,
    grid: Any = None,
    cluster: ClusterSpec = None,
    *,
    out: str | os.PathLike | None = None,
    redshifts: Any = None,
    overwrite: bool = False,
    chunk_rows: int | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
) -> Any:
    """Rest-frame spectra on one log-λ grid, normalised, every input row kept in order.

    ``spectra``: a ``Spectra``, a ``mock_source(...)``, or DESI/SDSS files (a path, folder,
    glob or list, as ``read`` takes; ``redshifts=`` as there). ``out=PATH`` writes a
    ``SpectraStore`` there, chunk by chunk, each chunk made and written by a worker, and
    returns it; rerunning the same call completes an interrupted store, and a store from
    other inputs or another grid is refused unless ``overwrite=True``. Without ``out`` the
    result is a ``Spectra`` in memory.

    ``grid``: rest-frame pixel centres (Å or a length Quantity); None covers every
    spectrum's rest range at 5.5e-4 dex (for a store from files or a mock:
    ``TRAINING_GRID``, 900-9800 Å). ``cluster`` (a ``ClusterSpec``): None uses the active
    cluster if any, False runs here; a backend name, address or cluster name is connected
    for the call and closed after it. Rows with no usable pixel stay, fully masked, and a
    ``SpectraWarning`` counts them. Raises ``MissingRedshiftError`` naming the target ids
    without a redshift.
    """
    from labkit.spectra.mock import MockSource

    if chunk_size is not None:
        chunk_size = whole("chunk_size", chunk_size, 1)
    is_files = isinstance(spectra, (str, os.PathLike, list, tuple))
    if not isinstance(spectra, (Spectra, MockSource)) and not is_files:
        raise ParameterError(
            "preprocess needs a Spectra, a mock_source(...) or survey files, got "
            f"{type(spectra).__name__}"
        )
    if redshifts is not None and not is_files:
        raise ParameterError("redshifts= goes with survey files; join them with read() first")
    with using_cluster(cluster) as chosen:
        return _preprocess(
            spectra, grid, chosen, out, redshifts, overwrite, chunk_rows, chunk_size, progress
        )


def _preprocess(
    spectra: Any,
    grid: Any,
    cluster: Cluster | None,
    out: str | os.PathLike | None,
    redshifts: Any,
    overwrite: bool,
    chunk_rows: int | None,
    chunk_size: int | None,
    progress: bool,
) -> Any:
    from labkit.spectra.mock import MockSource

    if out is None:
        if isinstance(spectra, MockSource):
            spectra = spectra.rows(0, len(spectra))
        elif isinstance(spectra, (str, os.PathLike, list, tuple)):
            from labkit.spectra.io import read

            here = cluster if cluster is not None else False
            spectra = read(spectra, redshifts, cluster=here, progress=progress)
        return _preprocess_in_memory(spectra, grid, cluster, chunk_size, progress)
    if isinstance(spectra, Spectra):
        _usable_redshifts(spectra)
        grid = default_grid(spectra) if grid is None else _check_grid(grid)
    else:
        grid = TRAINING_GRID if grid is None else _check_grid(grid)
    from labkit.spectra.to_store import preprocess_to_store

    return preprocess_to_store(
        spectra,
        out,
        grid,
        cluster,
        redshifts=redshifts,
        chunk_rows=chunk_rows,
        overwrite=overwrite,
        progress=progress,
    )


def _preprocess_in_memory(
    spectra: Spectra, grid: Any, cluster: Cluster | None, chunk_size: int | None, progress: bool
) -> Spectra:
    _usable_redshifts(spectra)  # refuse before any work is sent anywhere
    grid = default_grid(spectra) if grid is None else _check_grid(grid)
    n = len(spectra)
    slots = _slots(cluster)
    size = chunk_size or _chunk_size(n, spectra.n_pixels, slots)
    flux = np.zeros((n, grid.size), dtype=np.float32)
    ivar = np.zeros((n, grid.size), dtype=np.float32)
    mask = np.ones((n, grid.size), dtype=bool)
    norm = np.full(n, np.nan)
    chunks = (spectra[start : start + size] for start in range(0, n, size))
    stream = _stream(chunks, grid, cluster, slots, progress, n, checked=True)
    for position, chunk, result in stream:
        rows = slice(position * size, position * size + len(chunk))
        result.place(flux[rows], ivar[rows], mask[rows], norm[rows])
    meta = spectra.meta.copy()
    meta["norm"] = norm
    meta.meta["frame"] = "rest"
    empty = int(mask.all(axis=1).sum())
    if empty:
        warnings.warn(
            f"{empty} of {n} spectra have no usable pixel on the rest-frame grid (all masked, "
            "ivar 0, or outside its range); they stay in place, fully masked",
            SpectraWarning,
            stacklevel=3,
        )
    return Spectra._trusted(
        grid, flux, ivar, mask, meta, flux_unit=u.dimensionless_unscaled, frame="rest"
    )
