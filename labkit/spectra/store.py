"""``SpectraStore``: rest-frame spectra on disk, in row chunks, for surveys larger than memory.

A store is a directory::

    store.json          format and version, grid, rows, chunk size, complete chunks, provenance
    flux/ ivar/ mask/   Zarr v3 arrays, N x P, one Zarr chunk per store chunk of rows
    wave/               Zarr v3 array, P
    meta/chunk-K.parquet  the metadata rows of chunk K (written last: the chunk's seal)

Workers write their own chunks (``write_chunk``); a chunk counts once its Parquet file
exists, which is renamed into place only after its pixels are on disk, so a write that is
interrupted leaves a store that opens and says which chunks are missing. The driver keeps
``store.json``'s list of complete chunks (``record_chunks``); chunks sealed by a worker after
a driver died are adopted when the store is next opened for writing.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from labkit.errors import StoreError, StoreMismatchError
from labkit.spectra.container import Spectra

FORMAT = "labkit-spectra-store"
FORMAT_VERSION = 1
CHUNK_ROWS = 1024  # spectra per chunk: ~15 MB of float32 pixels at ~1900 pixels
ARRAYS = ("flux", "ivar", "mask")
MANIFEST = "store.json"


def _compressors(dtype: str) -> list[Any]:
    """Blosc lz4 with bit-shuffling: of the codecs ``benchmarks/scale.py`` compares, it reads
    about as fast as the quickest (~0.8x uncompressed Zarr) and writes twice as fast as zstd,
    at ~31 % of the uncompressed bytes (zstd: ~29-34 %)."""
    from zarr.codecs import BloscCodec

    typesize = np.dtype(dtype).itemsize
    return [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=typesize)]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: a reader never sees half a manifest."""
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def _chunk_meta_path(root: Path, chunk: int) -> Path:
    return root / "meta" / f"chunk-{chunk:06d}.parquet"


def _chunk_files(root: Path, name: str, chunk: int) -> Path:
    return root / name / "c" / str(chunk) / "0"  # Zarr v3's default chunk key


# -- metadata as Parquet ---------------------------------------------------------------------
def _to_arrow(meta: Table):
    import pyarrow as pa

    columns = {}
    for name in meta.colnames:
        column = meta[name]
        values = np.asarray(column)
        if not values.dtype.isnative:  # FITS columns are big-endian; Arrow takes native only
            values = values.astype(values.dtype.newbyteorder("="))
        if getattr(column, "mask", None) is not None and np.any(column.mask):
            mask = np.asarray(column.mask)
            columns[name] = pa.array(values, mask=mask)
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def _from_arrow(table) -> Table:
    meta = Table()
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            values = column.to_numpy(zero_copy_only=False)
            meta[name] = np.ma.masked_array(
                np.where(column.is_null().to_numpy(zero_copy_only=False), 0, values),
                mask=column.is_null().to_numpy(zero_copy_only=False),
            )
        elif str(column.type) in ("string", "large_string"):
            meta[name] = np.asarray(column.to_pylist(), dtype=str)
        else:
            meta[name] = column.to_numpy()
    return meta


# -- the store -------------------------------------------------------------------------------
class SpectraStore:
    """A store opened for reading; nothing but ``store.json`` is read until asked.

    ``len(store)`` spectra on ``store.wave``; ``store[a:b]`` and ``store.read_chunk(k)`` give
    ``Spectra`` in memory; ``iter_chunks()`` streams them; ``meta`` is one astropy Table.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._wave: np.ndarray | None = None
        self._meta: Table | None = None

    # -- shape -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.manifest["rows"])

    @property
    def chunk_rows(self) -> int:
        return int(self.manifest["chunk_rows"])

    @property
    def n_chunks(self) -> int:
        return -(-len(self) // self.chunk_rows)

    @property
    def n_pixels(self) -> int:
        return int(self.manifest["pixels"])

    @property
    def frame(self) -> str:
        return "rest"

    @property
    def wave(self) -> np.ndarray:
        if self._wave is None:
            self._wave = np.asarray(self._array("wave")[:], dtype=np.float64)
        return self._wave

    def chunk_slice(self, chunk: int) -> slice:
        start = chunk * self.chunk_rows
        return slice(start, min(start + self.chunk_rows, len(self)))

    # -- completeness ----------------------------------------------------------------------
    @property
    def complete_chunks(self) -> list[int]:
        return sorted(int(k) for k in self.manifest["complete"])

    @property
    def missing_chunks(self) -> list[int]:
        done = set(self.complete_chunks)
        return [k for k in range(self.n_chunks) if k not in done]

    @property
    def is_complete(self) -> bool:
        return not self.missing_chunks

    def _check_complete(self, what: str) -> None:
        missing = self.missing_chunks
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise StoreError(
                f"{len(missing)} of {self.n_chunks} chunks are missing ({shown}), so {what} "
                "cannot be read; rerun the preprocess call that wrote it to complete it",
                path=str(self.path),
            )

    # -- reading ---------------------------------------------------------------------------
    @property
    def meta(self) -> Table:
        """Every spectrum's metadata, in row order (read once, then kept)."""
        if self._meta is None:
            self._check_complete("its metadata")
            self._meta = vstack([self.chunk_meta(k) for k in range(self.n_chunks)])
            self._meta.meta.update(self.manifest.get("table_meta", {}))
        return self._meta

    def _array(self, name: str):
        import zarr

        try:
            return zarr.open_array(self.path / name, mode="r")
        except Exception as exc:
            raise StoreError(
                f"its {name} array cannot be opened: {exc}", path=str(self.path)
            ) from None

    def chunk_meta(self, chunk: int) -> Table:
        """The metadata rows of one chunk (read from its Parquet file)."""
        import pyarrow.parquet as pq

        path = _chunk_meta_path(self.path, chunk)
        try:
            return _from_arrow(pq.read_table(path))
        except FileNotFoundError:
            raise StoreError(
                f"the metadata file {path.name} is missing", path=str(self.path), chunk=chunk
            ) from None
        except Exception as exc:
            raise StoreError(
                f"the metadata file {path.name} is corrupt: {exc}", path=str(self.path), chunk=chunk
            ) from None

    def read_chunk(self, chunk: int) -> Spectra:
        """Stored chunk ``chunk`` as ``Spectra``; ``StoreError`` naming it if missing or corrupt."""
        if not 0 <= chunk < self.n_chunks:
            raise StoreError(
                f"no chunk {chunk}: the store has {self.n_chunks}", path=str(self.path)
            )
        if chunk not in set(self.manifest["complete"]):
            raise StoreError(
                "this chunk was never completed; rerun the preprocess call that wrote the store",
                path=str(self.path),
                chunk=chunk,
            )
        rows = self.chunk_slice(chunk)
        arrays = {}
        for name in ARRAYS:
            if not _chunk_files(self.path, name, chunk).is_file():
                raise StoreError(
                    f"the {name} chunk file is missing", path=str(self.path), chunk=chunk
                )
            try:
                arrays[name] = self._array(name)[rows]
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(
                    f"the {name} chunk file is corrupt: {type(exc).__name__}: {exc}",
                    path=str(self.path),
                    chunk=chunk,
                ) from None
        meta = self._meta[rows] if self._meta is not None else self.chunk_meta(chunk)
        if len(meta) != rows.stop - rows.start:
            raise StoreError(
                f"its metadata has {len(meta)} rows, its pixels {rows.stop - rows.start}",
                path=str(self.path),
                chunk=chunk,
            )
        meta.meta.update(self.manifest.get("table_meta", {}))
        return _rest_spectra(self.wave, arrays["flux"], arrays["ivar"], arrays["mask"], meta)

    def iter_chunks(self, chunks: list[int] | None = None) -> Iterator[Spectra]:
        """Each stored chunk (or those listed) as ``Spectra``, in order."""
        self._check_complete("its chunks")
        for chunk in range(self.n_chunks) if chunks is None else chunks:
            yield self.read_chunk(chunk)

    def __getitem__(self, key: slice | int) -> Spectra:
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} is outside a store of {len(self)} spectra")
            key = slice(index, index + 1)
        if not isinstance(key, slice):
            raise TypeError("a store is indexed by an int or a slice of rows; use store[a:b]")
        rows = range(*key.indices(len(self)))
        if not rows:  # still the store's columns (read from chunk 0)
            return self.read_chunk(0)[0:0] if self.n_chunks else self._empty()
        low, high = min(rows[0], rows[-1]), max(rows[0], rows[-1]) + 1
        first, last = low // self.chunk_rows, (high - 1) // self.chunk_rows
        parts = [self.read_chunk(k) for k in range(first, last + 1)]
        offset = first * self.chunk_rows
        joined = parts[0] if len(parts) == 1 else _stack(parts, self.wave)
        if rows.step == 1:
            return joined[low - offset : high - offset]
        return joined[np.asarray(rows) - offset]  # stepped, either way

    def _empty(self) -> Spectra:
        n = self.n_pixels
        empty = np.zeros((0, n), np.float32)
        return _rest_spectra(self.wave, empty, empty, np.zeros((0, n), bool), Table())

    def __repr__(self) -> str:
        missing = self.missing_chunks
        state = "complete" if not missing else f"{len(missing)} of {self.n_chunks} chunks missing"
        return (
            f"<SpectraStore {self.path} {len(self)} spectra x {self.n_pixels} pixels, "
            f"{self.n_chunks} chunks of {self.chunk_rows}, {state}>"
        )

    def nbytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def _rest_spectra(wave, flux, ivar, mask, meta: Table) -> Spectra:
    return Spectra._trusted(
        wave, flux, ivar, mask, meta, flux_unit=u.dimensionless_unscaled, frame="rest"
    )


def _stack(parts: list[Spectra], wave: np.ndarray) -> Spectra:
    flux = np.concatenate([p.flux for p in parts])
    ivar = np.concatenate([p.ivar for p in parts])
    mask = np.concatenate([p.mask for p in parts])
    meta = vstack([p.meta for p in parts])
    return _rest_spectra(wave, flux, ivar, mask, meta)


def read_manifest(path: Path) -> dict[str, Any]:
    manifest = path / MANIFEST
    if not path.is_dir():
        raise StoreError("no such store (not a directory)", path=str(path))
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise StoreError(
            f"not a labkit spectra store: it has no {MANIFEST}", path=str(path)
        ) from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"its {MANIFEST} is unreadable: {exc}", path=str(path)) from None
    if data.get("format") != FORMAT:
        raise StoreError(
            f"not a labkit spectra store: {MANIFEST} says format {data.get('format')!r}",
            path=str(path),
        )
    if data.get("version") != FORMAT_VERSION:
        raise StoreError(
            f"the store has format version {data.get('version')!r}, but this labkit reads "
            f"version {FORMAT_VERSION}; rewrite it with this labkit (preprocess ..., "
            "overwrite=True) or use the labkit that wrote it",
            path=str(path),
        )
    return data


def _manifest_format(path: Path) -> Any:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def open_store(path: str | os.PathLike) -> SpectraStore:
    """Open a store written by ``preprocess(..., out=PATH)``; lazy: only ``store.json`` is read."""
    return SpectraStore(path)


def is_store(value: Any) -> bool:
    return isinstance(value, SpectraStore)


# -- writing ---------------------------------------------------------------------------------
def create_store(
    path: str | os.PathLike,
    *,
    rows: int,
    wave: np.ndarray,
    chunk_rows: int,
    inputs: dict[str, Any],
    overwrite: bool,
) -> SpectraStore:
    """A store ready for ``write_chunk``: new, or the same one again to complete it.

    ``inputs`` describes what is written (source and grid); an existing store made from
    other inputs is refused unless ``overwrite``. Chunks a worker sealed after the driver
    died are adopted, so they are not computed again.
    """
    import zarr

    root = Path(path)
    if root.exists() and (root / MANIFEST).exists():
        try:
            existing = read_manifest(root)
        except StoreError:  # another format version is replaced too, when asked (as it says)
            if not (overwrite and _manifest_format(root) == FORMAT):
                raise
            existing = {}
        same = existing.get("inputs") == inputs and existing.get("chunk_rows") == chunk_rows
        if same and not overwrite:
            store = SpectraStore(root)
            adopt_sealed_chunks(store)
            return store
        if not overwrite:
            raise StoreMismatchError(
                "it was written from other inputs or onto another grid; pass overwrite=True "
                "to replace it, or choose another out= path",
                path=str(root),
            )
        shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise StoreError(
            "the folder exists and is not a labkit spectra store; choose another out= path",
            path=str(root),
        )
    from labkit.version import __version__

    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "meta").mkdir(exist_ok=True)
        group = zarr.open_group(root, mode="a", zarr_format=3)
        n_pixels = len(wave)
        for name, dtype in (("flux", "float32"), ("ivar", "float32"), ("mask", "bool")):
            group.create_array(
                name,
                shape=(rows, n_pixels),
                chunks=(chunk_rows, n_pixels),
                dtype=dtype,
                compressors=_compressors(dtype),
                fill_value=True if dtype == "bool" else 0,
            )
        group.create_array("wave", shape=(n_pixels,), dtype="float64", compressors=None)
        group["wave"][:] = wave
        _write_json(
            root / MANIFEST,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "rows": int(rows),
                "pixels": int(n_pixels),
                "chunk_rows": int(chunk_rows),
                "grid": {
                    "start": float(wave[0]),
                    "stop": float(wave[-1]),
                    "pixels": int(n_pixels),
                    "dlog": float(np.log10(wave[1] / wave[0])) if n_pixels > 1 else 0.0,
                },
                "complete": [],
                "inputs": inputs,
                "provenance": {"labkit": __version__, "files": []},
                "table_meta": {"frame": "rest"},
            },
        )
    except OSError as exc:
        raise _disk_error(exc, root, None) from None
    return SpectraStore(root)


def _disk_error(exc: OSError, root: Path, chunk: int | None) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(
            "the disk is full; free space and rerun the same call to complete the store "
            "(complete chunks stay readable)",
            path=str(root),
            chunk=chunk,
        )
    return StoreError(f"cannot write: {exc}", path=str(root), chunk=chunk)


def write_chunk(path: str | os.PathLike, chunk: int, spectra: Spectra) -> None:
    """Write one chunk's rest-frame rows, then seal it with its metadata (runs on a worker)."""
    import pyarrow.parquet as pq
    import zarr

    root = Path(path)
    manifest = read_manifest(root)
    start = chunk * manifest["chunk_rows"]
    rows = slice(start, start + len(spectra))
    final = _chunk_meta_path(root, chunk)
    temporary = final.with_suffix(f".tmp-{os.getpid()}")
    try:
        for name in ARRAYS:
            zarr.open_array(root / name, mode="r+")[rows] = getattr(spectra, name)
        meta = spectra.meta.copy(copy_data=False)
        meta.meta.clear()
        pq.write_table(_to_arrow(meta), temporary)
        os.replace(temporary, final)
    except OSError as exc:
        temporary.unlink(missing_ok=True)  # a full disk has room for store.json again
        raise _disk_error(exc, root, chunk) from None


def sealed_chunks(store: SpectraStore) -> list[int]:
    """Chunks whose metadata file is in place, whether or not ``store.json`` lists them yet."""
    found = []
    for path in (store.path / "meta").glob("chunk-*.parquet"):
        try:
            found.append(int(path.stem.split("-")[1]))
        except ValueError:
            continue
    return sorted(k for k in found if k < store.n_chunks)


def adopt_sealed_chunks(store: SpectraStore) -> None:
    sealed = set(sealed_chunks(store)) - set(store.complete_chunks)
    if sealed:
        record_chunks(store, sorted(sealed), [])


def record_chunks(store: SpectraStore, chunks: list[int], files: list[dict[str, Any]]) -> None:
    """Add chunks (and input files' provenance) to ``store.json`` (the driver does this)."""
    manifest = store.manifest
    manifest["complete"] = sorted(set(manifest["complete"]) | set(chunks))
    known = {entry["path"] for entry in manifest["provenance"]["files"]}
    for entry in files:  # a file read by several chunks is listed once
        if entry["path"] not in known:
            manifest["provenance"]["files"].append(entry)
            known.add(entry["path"])
    try:
        _write_json(store.path / MANIFEST, manifest)
    except OSError as exc:
        raise _disk_error(exc, store.path, None) from None
