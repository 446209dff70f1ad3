"""``preprocess(..., out=STORE)``: survey in, rest-frame store out, one chunk per task.

Each task makes its own observed spectra where it runs (reads its rows of the input files, or
generates its rows of a mock survey), moves them to the rest frame and writes its chunk into
the store; only a small summary comes back. Chunks already complete are skipped, so the same
call completes an interrupted store.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from labkit.checks import whole
from labkit.errors import LabkitError, MapItemError, ParameterError, SpectraWarning
from labkit.spectra.container import Spectra, concatenate
from labkit.spectra.mock import MockSource
from labkit.spectra.store import (
    CHUNK_ROWS,
    SpectraStore,
    create_store,
    record_chunks,
    write_chunk,
)

if TYPE_CHECKING:
    from labkit.clusters import Cluster

RECORD_EVERY_S = 2.0  # how often the driver brings store.json up to date while writing


# -- where a chunk's observed spectra come from ------------------------------------------------
@dataclass
class Segment:
    """Rows ``start`` to ``stop`` of one input file."""

    path: str
    start: int
    stop: int


@dataclass
class ChunkTask:
    """What a worker needs to write one chunk; it carries no pixels unless given in memory."""

    store: str
    chunk: int
    grid: np.ndarray
    mock: MockSource | None = None
    rows: tuple[int, int] = (0, 0)
    segments: list[Segment] = field(default_factory=list)
    redshifts: Table | None = None
    spectra: Spectra | None = None

    def observed(self) -> tuple[Spectra, list[dict[str, Any]]]:
        """This chunk's observed spectra, and provenance of the files they came from."""
        if self.spectra is not None:
            return self.spectra, []
        if self.mock is not None:
            return self.mock.rows(*self.rows), []
        from labkit.spectra.io import read_file
        from labkit.spectra.redshifts import join_redshifts

        parts, files = [], []
        for segment in self.segments:
            parts.append(read_file(segment.path)[segment.start : segment.stop])
            files.append({"path": segment.path, "sha256": sha256(segment.path)})
        spectra = parts[0] if len(parts) == 1 else concatenate(parts)
        if self.redshifts is not None:
            spectra = join_redshifts(spectra, self.redshifts)
        return spectra, files


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_task(task: ChunkTask) -> dict[str, Any]:
    """Runs on a worker: observed spectra -> rest frame -> the store. Returns a summary."""
    from labkit.spectra.preprocess import Block, _rest_frame, _usable_redshifts, process_block

    spectra, files = task.observed()
    z = _usable_redshifts(spectra)
    result = process_block(Block(spectra.wave, spectra.flux, spectra.ivar, z, task.grid))
    rest = _rest_frame(spectra, result, task.grid)
    write_chunk(task.store, task.chunk, rest)
    empty = int(rest.mask.all(axis=1).sum())
    return {"chunk": task.chunk, "rows": len(rest), "empty": empty, "files": files}


# -- planning --------------------------------------------------------------------------------
def _file_rows(path: str) -> int:
    """Spectra in one file, from its headers (a DESI coadd's FIBERMAP, else one)."""
    from labkit.errors import SpectraFileError
    from labkit.spectra.desi import looks_like_desi
    from labkit.spectra.io import read_file

    if not Path(path).is_file():
        raise SpectraFileError("no such file", path=path)
    try:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            if looks_like_desi(hdul):
                return int(hdul["FIBERMAP"].header["NAXIS2"])
    except OSError:
        pass
    return len(read_file(path))  # SDSS (one each) and anything odd: read_file says what


def _file_targetids(path: str) -> np.ndarray:
    from labkit.spectra.io import read_file

    return np.asarray(read_file(path).meta["targetid"], dtype=np.int64)


def _segments(paths: list[str], counts: list[int], start: int, stop: int) -> list[Segment]:
    segments, offset = [], 0
    for path, count in zip(paths, counts, strict=True):
        lo, hi = max(start, offset), min(stop, offset + count)
        if lo < hi:
            segments.append(Segment(path, lo - offset, hi - offset))
        offset += count
    return segments


class Plan:
    """How a source splits into store chunks: rows, the chunk size and one task per chunk."""

    def __init__(self, source: Any, grid: np.ndarray, chunk_rows: int, redshifts: Any, cluster):
        self.grid, self.chunk_rows, self.cluster = grid, chunk_rows, cluster
        self.source, self.redshifts = source, None
        if isinstance(source, MockSource):
            self.rows, self.inputs = len(source), source.describe()
        elif isinstance(source, Spectra):
            self.rows = len(source)
            self.inputs = {"spectra": _fingerprint(source)}
        else:
            self._plan_files(source, redshifts)
        self.inputs["grid"] = _grid_key(grid)

    def _plan_files(self, source: Any, redshifts: Any) -> None:
        from labkit.spectra.io import resolve_paths
        from labkit.spectra.redshifts import load_redshifts

        self.paths = resolve_paths(source)
        self.counts = self._map(_file_rows, self.paths, "count spectra")
        self.rows = int(sum(self.counts))
        stats = [os.stat(p) for p in self.paths]
        self.inputs = {
            "files": [
                [p, s.st_size, int(s.st_mtime)] for p, s in zip(self.paths, stats, strict=True)
            ]
        }
        if redshifts is not None:
            table = load_redshifts(redshifts)
            self.inputs["redshifts"] = _fingerprint_table(table)
            order = np.argsort(np.asarray(table["targetid"]), kind="stable")
            self.redshifts = table[order]
            self.targetids = np.concatenate(self._map(_file_targetids, self.paths, "read ids"))

    def _map(self, fn, items: list, desc: str) -> list:
        if self.cluster is not None and len(items) > 1:
            return self.cluster.map(fn, items, progress=False, desc=desc)
        return [fn(item) for item in items]

    def task(self, store: str, chunk: int) -> ChunkTask:
        start = chunk * self.chunk_rows
        stop = min(start + self.chunk_rows, self.rows)
        task = ChunkTask(store, chunk, self.grid)
        if isinstance(self.source, MockSource):
            task.mock, task.rows = self.source, (start, stop)
        elif isinstance(self.source, Spectra):
            task.spectra = self.source[start:stop]
        else:
            task.segments = _segments(self.paths, self.counts, start, stop)
            if self.redshifts is not None:
                task.redshifts = self._redshifts_for(self.targetids[start:stop])
        return task

    def _redshifts_for(self, ids: np.ndarray) -> Table:
        known = np.asarray(self.redshifts["targetid"])
        at = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
        rows = np.unique(at[known[at] == ids])
        # join_redshifts fails on an empty table: give it a row that matches none of these ids,
        # so the chunk still gets z (masked) and MissingRedshiftError names its live targets
        return self.redshifts[rows if rows.size else slice(0, 1)]


def _grid_key(grid: np.ndarray) -> list[float]:
    return [float(grid[0]), float(grid[-1]), int(grid.size)]


def _fingerprint(spectra: Spectra) -> str:
    digest = hashlib.sha256()
    for array in (spectra.wave, spectra.flux, spectra.ivar, spectra.mask):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(np.asarray(spectra.meta["targetid"]).tobytes())
    return digest.hexdigest()


def _fingerprint_table(table: Table) -> str:
    digest = hashlib.sha256()
    for name in table.colnames:
        digest.update(np.asarray(table[name]).tobytes())
    return digest.hexdigest()


# -- running ---------------------------------------------------------------------------------
def preprocess_to_store(
    source: Any,
    out: str | os.PathLike,
    grid: np.ndarray,
    cluster: Cluster | None,
    *,
    redshifts: Any = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SpectraStore:
    """Write every missing chunk of the store at ``out``; see ``preprocess``.

    ``cluster`` is already chosen (``preprocess`` turns its ``ClusterSpec`` into one): a
    ``Cluster``, or None to run here.
    """
    from tqdm.auto import tqdm

    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    chunk_rows = whole("chunk_rows", chunk_rows, 1)
    plan = Plan(source, grid, chunk_rows, redshifts, cluster)
    if plan.rows == 0:
        raise ParameterError("there are no spectra to preprocess")
    store = create_store(
        out,
        rows=plan.rows,
        wave=grid,
        chunk_rows=chunk_rows,
        inputs=plan.inputs,
        overwrite=overwrite,
    )
    todo = store.missing_chunks
    done_rows = len(store) - sum(_rows_in(store, k) for k in todo)
    recorder = _Recorder(store)
    with tqdm(
        total=len(store),
        initial=done_rows,
        desc="preprocess",
        unit="spectrum",
        disable=not progress,
    ) as bar:
        try:
            for summary in _run(plan, str(store.path), todo, cluster):
                recorder.add(summary)
                bar.update(summary["rows"])
        finally:
            recorder.flush()
    if recorder.empty:
        warnings.warn(
            f"{recorder.empty} of {len(store)} spectra have no usable pixel on the rest-frame "
            "grid (all masked, ivar 0, or outside its range); they stay in place, fully masked",
            SpectraWarning,
            stacklevel=3,
        )
    return SpectraStore(store.path)


def _rows_in(store: SpectraStore, chunk: int) -> int:
    rows = store.chunk_slice(chunk)
    return rows.stop - rows.start


def _run(plan: Plan, store: str, todo: list[int], cluster):
    if not todo:  # the same call again on a complete store: nothing to do
        return
    if cluster is None:
        for chunk in todo:
            yield write_task(plan.task(store, chunk))
        return
    window = len(todo) if not isinstance(plan.source, Spectra) else 4 * _slots(cluster)
    for first in range(0, len(todo), window):
        tasks = [plan.task(store, chunk) for chunk in todo[first : first + window]]
        try:
            for _, summary in cluster.imap_unordered(write_task, tasks, chunksize=1):
                yield summary
        except MapItemError as exc:  # the worker's own error says what is wrong
            if isinstance(exc.__cause__, LabkitError):
                raise exc.__cause__ from None
            raise


def _slots(cluster) -> int:
    return max(1, int(cluster.resources()["cpus"]))


class _Recorder:
    """Brings store.json up to date every few seconds, and on the way out."""

    def __init__(self, store: SpectraStore):
        self.store, self.chunks, self.files = store, [], []
        self.empty, self.last = 0, time.monotonic()

    def add(self, summary: dict[str, Any]) -> None:
        self.chunks.append(summary["chunk"])
        self.files += summary["files"]
        self.empty += summary["empty"]
        if time.monotonic() - self.last > RECORD_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.chunks or self.files:
            record_chunks(self.store, self.chunks, self.files)
        self.chunks, self.files, self.last = [], [], time.monotonic()
