"""SDSS/BOSS spec-lite files: one spectrum per file on the global SDSS log-λ grid.

HDU 1 ``COADD`` holds columns flux, loglam, ivar, and_mask, or_mask, wdisp, sky, model;
HDU 2 (``SPALL``) one row of the spAll catalogue with PLATE, MJD, FIBERID, Z, CLASS,
ZWARNING. Every file's loglam is a slice of log10 λ = k × 1e-4, so spectra from files
starting at different wavelengths are placed on that grid exactly.

SDSS has no TARGETID; labkit uses PLATE × 10⁹ + MJD × 10⁴ + FIBERID (unique, fits int64),
or a TARGETID column in HDU 2 when the file has one (labkit writes one when needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from labkit.errors import SpectraError, SpectraFileError
from labkit.spectra.container import FLUX_UNIT, Spectra
from labkit.spectra.formats import SpectraFormat, prepare_folder, register_format
from labkit.spectra.grids import SDSS_DLOG
from labkit.spectra.mock.truth import TRUTH_HDU, join_truth, truth_hdu

BUNIT = "1E-17 erg/cm^2/s/Ang"
MASK_BIT = 1 << 24  # NODATA in SDSS's SPPIXMASK bits
COADD_COLUMNS = ("flux", "loglam", "ivar", "and_mask", "or_mask", "wdisp", "sky", "model")


def looks_like_sdss(hdul: fits.HDUList) -> bool:
    if len(hdul) < 2 or not isinstance(hdul[1], fits.BinTableHDU):
        return False
    names = {c.lower() for c in hdul[1].columns.names}
    return {"flux", "loglam", "ivar"} <= names


def compose_targetid(plate, mjd, fiberid) -> np.ndarray:
    return (
        np.asarray(plate, np.int64) * 10**9
        + np.asarray(mjd, np.int64) * 10**4
        + np.asarray(fiberid, np.int64)
    )


def read_sdss(path: str, hdul: fits.HDUList) -> Spectra:
    """The spectrum of one spec-lite file; ``path`` names the file in errors."""
    coadd = hdul[1].data
    column = {c.lower(): c for c in coadd.columns.names}
    loglam = np.asarray(coadd[column["loglam"]], dtype=np.float64)
    flux = np.asarray(coadd[column["flux"]], dtype=np.float32)[None, :]
    ivar = np.asarray(coadd[column["ivar"]], dtype=np.float32)[None, :]
    bits = coadd[column["and_mask"]] if "and_mask" in column else np.zeros(loglam.size, int)
    flagged = (np.asarray(bits) != 0)[None, :]
    claimed = ~flagged & (ivar != 0)
    broken = claimed & (~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0))
    if broken.any():
        raise SpectraFileError(
            f"COADD has NaN, inf or negative flux/ivar in {int(broken.sum())} unmasked pixels",
            path=path,
        )
    good = claimed & (ivar > 0)
    wave = _wave(loglam, path)
    info = _spall(hdul, path)
    meta = Table(
        {
            "targetid": [info["targetid"]],
            "ra": [info["ra"]],
            "dec": [info["dec"]],
            "plate": [info["plate"]],
            "mjd": [info["mjd"]],
            "fiberid": [info["fiberid"]],
            "z": np.ma.masked_invalid([info["z"]]),
            "zwarn": [info["zwarn"]],
            "spectype": [info["spectype"]],
            "survey": ["sdss"],
            "file": [str(path)],
        }
    )
    header = hdul[0].header
    spectra = Spectra._trusted(
        wave,
        np.where(np.isfinite(flux), flux, 0).astype(np.float32),
        np.where(good, ivar, 0).astype(np.float32),
        ~good,
        meta,
        flux_unit=_unit(header.get("BUNIT")),
        frame=str(header.get("LKFRAME", "observed")),
    )
    if TRUTH_HDU in hdul:
        spectra = join_truth(spectra, Table(hdul[TRUTH_HDU].data))
    return spectra


def _wave(loglam: np.ndarray, path: str) -> np.ndarray:
    if loglam.size < 2 or not np.all(np.isfinite(loglam)):
        raise SpectraFileError("COADD loglam must hold at least 2 finite values", path=path)
    k = np.round(loglam / SDSS_DLOG)
    on_grid = np.all(np.abs(loglam - k * SDSS_DLOG) < 0.05 * SDSS_DLOG) and np.all(np.diff(k) == 1)
    wave = 10.0 ** (k * SDSS_DLOG) if on_grid else 10.0**loglam
    if np.any(np.diff(wave) <= 0):
        raise SpectraFileError("COADD loglam does not increase from pixel to pixel", path=path)
    return wave


def _spall(hdul: fits.HDUList, path: str) -> dict:
    row, names = None, {}
    if len(hdul) > 2 and isinstance(hdul[2], fits.BinTableHDU) and len(hdul[2].data):
        row = hdul[2].data[0]
        names = {c.upper(): c for c in hdul[2].columns.names}
    header = hdul[0].header

    def get(name, header_name, default):
        if name in names:
            return row[names[name]]
        return header.get(header_name, default)

    plate, mjd, fiberid = (
        get("PLATE", "PLATEID", None),
        get("MJD", "MJD", None),
        get("FIBERID", "FIBERID", None),
    )
    if "TARGETID" in names:
        targetid = int(row[names["TARGETID"]])
    elif None not in (plate, mjd, fiberid):
        targetid = int(compose_targetid(plate, mjd, fiberid))
    else:
        raise SpectraFileError(
            "no TARGETID, nor PLATE, MJD and FIBERID to name the spectrum", path=path
        )
    z = float(row[names["Z"]]) if "Z" in names else np.nan
    return {
        "targetid": targetid,
        "plate": int(plate if plate is not None else -1),
        "mjd": int(mjd if mjd is not None else -1),
        "fiberid": int(fiberid if fiberid is not None else -1),
        "z": z,
        "zwarn": int(row[names["ZWARNING"]]) if "ZWARNING" in names else 0,
        "spectype": str(row[names["CLASS"]]).strip() if "CLASS" in names else "",
        "ra": float(get("PLUG_RA", "PLUG_RA", np.nan)),
        "dec": float(get("PLUG_DEC", "PLUG_DEC", np.nan)),
    }


def _unit(text: str | None) -> u.UnitBase:
    if text is None or text == BUNIT:
        return FLUX_UNIT
    try:
        return u.Unit(text, format="fits")
    except ValueError:
        return FLUX_UNIT


def file_name(plate: int, mjd: int, fiberid: int) -> str:
    return f"spec-{plate:04d}-{mjd:05d}-{fiberid:04d}.fits"


def write_sdss(spectra: Spectra, folder: Path, overwrite: bool = False) -> list[Path]:
    """One spec-lite file per spectrum in ``folder``; returns the paths, in row order."""
    meta = spectra.meta
    targetid = np.asarray(meta["targetid"], dtype=np.int64)
    if {"plate", "mjd", "fiberid"} <= set(meta.colnames):
        plate, mjd, fiberid = (
            np.asarray(meta[c], dtype=np.int64) for c in ("plate", "mjd", "fiberid")
        )
    else:
        ids = np.where(targetid >= 0, targetid, 0)
        plate, mjd, fiberid = ids // 10**9, (ids // 10**4) % 10**5, ids % 10**4
        negative = targetid < 0
        fiberid = np.where(negative, np.arange(len(meta)), fiberid)
    needs_id = compose_targetid(plate, mjd, fiberid) != targetid
    names = [file_name(*ids) for ids in zip(plate, mjd, fiberid, strict=True)]
    if len(set(names)) != len(names):
        raise SpectraError(
            "two spectra would get the same SDSS file name (same PLATE, MJD, FIBERID)"
        )
    loglam = np.log10(spectra.wave).astype(np.float32)
    unit = BUNIT if spectra.flux_unit == FLUX_UNIT else spectra.flux_unit.to_string("fits")
    z = np.ma.filled(np.ma.asarray(meta["z"], dtype=np.float64), np.nan)
    paths = []
    for i, name in enumerate(names):
        primary = fits.PrimaryHDU()
        header = primary.header
        header["PLATEID"], header["MJD"], header["FIBERID"] = (
            int(plate[i]),
            int(mjd[i]),
            int(fiberid[i]),
        )
        header["BUNIT"] = unit
        header["LKFRAME"] = (spectra.frame, "labkit: observed or rest frame")
        zeros = np.zeros(spectra.n_pixels, np.float32)
        coadd = fits.BinTableHDU.from_columns(
            [
                fits.Column("flux", "E", array=spectra.flux[i]),
                fits.Column("loglam", "E", array=loglam),
                fits.Column("ivar", "E", array=spectra.ivar[i]),
                fits.Column(
                    "and_mask", "J", array=np.where(spectra.mask[i], MASK_BIT, 0).astype(np.int32)
                ),
                fits.Column(
                    "or_mask", "J", array=np.where(spectra.mask[i], MASK_BIT, 0).astype(np.int32)
                ),
                fits.Column("wdisp", "E", array=np.ones(spectra.n_pixels, np.float32)),
                fits.Column("sky", "E", array=zeros),
                fits.Column("model", "E", array=zeros),
            ],
            name="COADD",
        )
        row = [
            fits.Column("PLATE", "J", array=[plate[i]]),
            fits.Column("MJD", "J", array=[mjd[i]]),
            fits.Column("FIBERID", "J", array=[fiberid[i]]),
            fits.Column("CLASS", "6A", array=[str(meta["spectype"][i])]),
            fits.Column("Z", "E", array=[z[i]]),
            fits.Column("ZWARNING", "J", array=[_value(meta, "zwarn", i, 0)]),
            fits.Column("PLUG_RA", "D", array=[_value(meta, "ra", i, 0.0)]),
            fits.Column("PLUG_DEC", "D", array=[_value(meta, "dec", i, 0.0)]),
        ]
        if needs_id[i]:
            row.append(fits.Column("TARGETID", "K", array=[targetid[i]]))
        hdus = [primary, coadd, fits.BinTableHDU.from_columns(row, name="SPALL")]
        truth = truth_hdu(meta[i : i + 1])
        if truth is not None:
            hdus.append(truth)
        path = Path(folder) / name
        fits.HDUList(hdus).writeto(path, overwrite=overwrite)
        paths.append(path)
    return paths


def _value(meta: Table, name: str, i: int, default):
    if name not in meta.colnames or np.ma.is_masked(meta[name][i]):
        return default
    return meta[name][i]


def write_sdss_folder(spectra: Spectra, folder: Path, overwrite: bool = False) -> list[Path]:
    """A folder that holds no FITS files yet gets one spec-lite file per spectrum."""
    prepare_folder(folder, overwrite)
    return write_sdss(spectra, folder, overwrite)


register_format(
    SpectraFormat(
        name="sdss",
        identify=looks_like_sdss,
        read=read_sdss,
        write=write_sdss_folder,
        looks_for="an SDSS spec-lite file (COADD with flux, loglam, ivar)",
    )
)
