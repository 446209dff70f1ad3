"""Redshift tables (redrock/zbest files or user tables) joined onto spectra by TARGETID.

DESI keeps redshifts out of the coadds, in redrock files with a ``REDSHIFTS`` HDU (older
releases: ``ZBEST``) holding TARGETID, Z, ZERR, ZWARN, SPECTYPE. A table given by the user
needs TARGETID and Z, in any letter case; SPECTYPE, ZERR and ZWARN are taken when present.
"""

from __future__ import annotations

import glob as globbing
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table, vstack

from labkit.errors import SpectraError, SpectraFileError
from labkit.spectra.container import Spectra

HDU_NAMES = ("REDSHIFTS", "ZBEST")
OPTIONAL = {"SPECTYPE": "spectype", "ZERR": "zerr", "ZWARN": "zwarn"}


def load_redshifts(source: Any) -> Table:
    """A Table(targetid, z[, spectype, zerr, zwarn]) from a file, glob, list of files, or table."""
    if isinstance(source, (str, Path)) or (
        isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, Path))
    ):
        paths = _paths(source)
        return _unique(
            vstack([_from_file(p) for p in paths]) if len(paths) > 1 else _from_file(paths[0])
        )
    if isinstance(source, Table):
        return _unique(redshift_table(source, "the redshifts table"))
    try:
        table = Table.from_pandas(source) if hasattr(source, "to_numpy") else Table(source)
    except Exception as exc:
        raise SpectraError(
            "redshifts must be a redrock/zbest file (or glob, or list of files) or a table with "
            f"TARGETID and Z columns; got {type(source).__name__}: {exc}"
        ) from None
    return _unique(redshift_table(table, "the redshifts table"))


def _paths(source) -> list[str]:
    items = [source] if isinstance(source, (str, Path)) else list(source)
    paths: list[str] = []
    for item in items:
        item = str(item)
        if globbing.has_magic(item):
            found = sorted(globbing.glob(item))
            if not found:
                raise SpectraError(f"no redshift file matches {item}")
            paths += found
        elif not Path(item).is_file():
            raise SpectraFileError("no such redshift file", path=item)
        else:
            paths.append(item)
    return paths


def _from_file(path: str) -> Table:
    if path.endswith((".ecsv", ".csv")):
        try:
            return redshift_table(Table.read(path), path)
        except SpectraError:
            raise
        except Exception as exc:
            raise SpectraFileError(f"cannot read redshifts: {exc}", path=path) from None
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [hdu.name for hdu in hdul]
            for name in (*HDU_NAMES, *names):
                hdu = hdul[name] if name in names else None
                if isinstance(hdu, fits.BinTableHDU) and {"TARGETID", "Z"} <= {
                    c.upper() for c in hdu.columns.names
                }:
                    return redshift_table(Table(hdu.data), path)
    except SpectraError:
        raise
    except Exception as exc:
        raise SpectraFileError(
            f"cannot read redshifts: {type(exc).__name__}: {exc}", path=path
        ) from None
    raise SpectraFileError(
        f"no table with TARGETID and Z (looked for {', '.join(HDU_NAMES)} and any table HDU)",
        path=path,
    )


def redshift_table(table: Table, where: str) -> Table:
    """Pick and rename the redshift columns of ``table``; ``where`` names it in errors."""
    upper = {name.upper(): name for name in table.colnames}
    missing = [c for c in ("TARGETID", "Z") if c not in upper]
    if missing:
        raise SpectraError(f"{where} has no {' or '.join(missing)} column (has {table.colnames})")
    out = Table()
    out["targetid"] = np.asarray(table[upper["TARGETID"]]).astype(np.int64)
    z = np.ma.masked_invalid(np.ma.asarray(table[upper["Z"]], dtype=np.float64))
    out["z"] = MaskedColumn(np.ma.getdata(z), mask=np.ma.getmaskarray(z))
    for theirs, ours in OPTIONAL.items():
        if theirs in upper:
            values = table[upper[theirs]]
            if ours == "spectype":
                values = np.char.strip(np.asarray(np.ma.filled(values, "")).astype(str))
            out[ours] = values
    return out


def _unique(table: Table) -> Table:
    """One row per target; a target listed twice with different redshifts is an error."""
    ids, first, counts = np.unique(
        np.asarray(table["targetid"]), return_index=True, return_counts=True
    )
    if (counts > 1).any():
        z = np.ma.filled(table["z"], np.nan)
        order = np.argsort(np.asarray(table["targetid"]), kind="stable")
        sorted_ids, sorted_z = np.asarray(table["targetid"])[order], z[order]
        starts = np.searchsorted(sorted_ids, ids[counts > 1])
        clashing = [
            int(i)
            for i, s, c in zip(ids[counts > 1], starts, counts[counts > 1], strict=True)
            if np.unique(sorted_z[s : s + c]).size > 1
        ]
        if clashing:
            shown = ", ".join(map(str, clashing[:10]))
            raise SpectraError(
                f"the redshifts give different Z for the same TARGETID: {shown}"
                + (f" and {len(clashing) - 10} more" if len(clashing) > 10 else "")
            )
    return table[np.sort(first)]


def join_redshifts(spectra: Spectra, table: Table) -> Spectra:
    """Copy of ``spectra`` with z (and spectype, zerr, zwarn) from ``table``, by target id.

    Targets the table does not list keep what they had (``z`` masked if unknown).
    """
    table = _unique(table)
    ids = np.asarray(table["targetid"])
    order = np.argsort(ids)
    wanted = np.asarray(spectra.meta["targetid"])
    at = np.clip(np.searchsorted(ids[order], wanted), 0, max(len(ids) - 1, 0))
    found = (ids[order][at] == wanted) if len(ids) else np.zeros(len(wanted), bool)
    source = order[at][found]
    meta = spectra.meta.copy()
    for name in ("z", "zerr", "zwarn"):
        if name not in table.colnames:
            continue
        values = np.ma.asarray(table[name])
        if name in meta.colnames:
            column = np.ma.array(np.ma.asarray(meta[name]), dtype=values.dtype, copy=True)
        else:
            column = np.ma.masked_all(len(meta), dtype=values.dtype)
        column[found] = values[source]
        meta[name] = MaskedColumn(np.ma.getdata(column), mask=np.ma.getmaskarray(column))
    if "spectype" in table.colnames:
        new = np.asarray(table["spectype"], dtype=str)[source]
        old = np.asarray(meta["spectype"], dtype=str)
        column = old.astype(f"U{max(old.dtype.itemsize, new.dtype.itemsize, 4) // 4}")
        column[found] = new
        meta["spectype"] = column
    return spectra.with_meta(meta)
