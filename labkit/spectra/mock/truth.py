"""Ground truth of mock spectra, kept in a ``TRUTH`` HDU as DESI's simulations do.

Columns: TARGETID, LABEL (class name), IS_ANOMALY, SUBTYPE (variant within the class).
Real archive files have no such HDU; the readers join it when present.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.table import Table

from labkit.spectra.container import Spectra

TRUTH_HDU = "TRUTH"
COLUMNS = {"label": "LABEL", "is_anomaly": "IS_ANOMALY", "subtype": "SUBTYPE"}


def truth_hdu(meta: Table) -> fits.BinTableHDU | None:
    """The TRUTH HDU for the truth columns in ``meta``, or None when it has none."""
    if "label" not in meta.colnames:
        return None
    columns = [fits.Column("TARGETID", "K", array=np.asarray(meta["targetid"], dtype=np.int64))]
    for ours, theirs in COLUMNS.items():
        if ours not in meta.colnames:
            continue
        if ours == "is_anomaly":
            columns.append(fits.Column(theirs, "L", array=np.asarray(meta[ours], dtype=bool)))
        else:
            values = np.asarray(meta[ours], dtype=str)
            width = max(1, int(np.char.str_len(values).max()) if values.size else 1)
            columns.append(fits.Column(theirs, f"{width}A", array=values))
    return fits.BinTableHDU.from_columns(columns, name=TRUTH_HDU)


def join_truth(spectra: Spectra, table: Table) -> Spectra:
    """Add the truth columns of ``table`` to ``spectra.meta``, matched by TARGETID."""
    upper = {name.upper(): name for name in table.colnames}
    ids = np.asarray(table[upper["TARGETID"]], dtype=np.int64)
    wanted = np.asarray(spectra.meta["targetid"])
    if ids.shape == wanted.shape and np.array_equal(ids, wanted):
        source = np.arange(len(ids))
        found = np.ones(len(ids), bool)
    else:
        order = np.argsort(ids)
        at = np.clip(np.searchsorted(ids[order], wanted), 0, max(len(ids) - 1, 0))
        found = ids[order][at] == wanted if len(ids) else np.zeros(len(wanted), bool)
        source = order[at]
    meta = spectra.meta.copy()
    for ours, theirs in COLUMNS.items():
        if theirs not in upper:
            continue
        values = np.asarray(table[upper[theirs]])[source]
        if ours == "is_anomaly":
            meta[ours] = np.where(found, values.astype(bool), False)
        else:
            meta[ours] = np.where(found, np.char.strip(values.astype(str)), "")
    return spectra.with_meta(meta)
