"""DESI coadd files: arms B, R, Z merged onto one grid; redshifts from REDSHIFTS if present.

A coadd holds ``FIBERMAP`` (one row per spectrum, TARGETID first) and, per camera arm X,
``X_WAVELENGTH`` (Å), ``X_FLUX``, ``X_IVAR``, ``X_MASK`` (N × P_X), often also
``X_RESOLUTION``, ``EXP_FIBERMAP`` and ``SCORES``, which labkit does not need. Neighbouring
arms overlap (B/R near 5800 Å, R/Z near 7600 Å) on pixels equal up to float rounding; there
the arms are combined by inverse variance. Redshifts live in separate redrock files in the
archive; a ``REDSHIFTS`` HDU in the same file (as labkit writes) is joined by TARGETID.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from labkit.errors import SpectraFileError
from labkit.spectra.container import FLUX_UNIT, Spectra
from labkit.spectra.formats import (
    FITS_SUFFIXES,
    SpectraFormat,
    prepare_folder,
    refuse_existing,
    register_format,
)
from labkit.spectra.mock.truth import TRUTH_HDU, join_truth, truth_hdu
from labkit.spectra.redshifts import join_redshifts, redshift_table

WAVE_SUFFIX = "_WAVELENGTH"
FLUX_BUNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_BUNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"
# Nominal arm ranges in Å (DESI spectrograph cameras), used when writing.
ARM_RANGES = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
FILE_SPECTRA = 500  # spectra per coadd when writing a folder (one DESI petal)
MASK_BIT = 1  # SOMEBADPIX in DESI's spectral mask bits


def looks_like_desi(hdul: fits.HDUList) -> bool:
    names = {hdu.name for hdu in hdul}
    return "FIBERMAP" in names and bool(_arms(names))


def _arms(names: set[str]) -> list[str]:
    arms = [n[: -len(WAVE_SUFFIX)] for n in names if n.endswith(WAVE_SUFFIX)]
    return sorted(a for a in arms if {f"{a}_FLUX", f"{a}_IVAR"} <= names)


def read_desi(path: str, hdul: fits.HDUList) -> Spectra:
    """The spectra of one coadd file, arms merged; ``path`` names the file in errors."""
    names = {hdu.name for hdu in hdul}
    fibermap = hdul["FIBERMAP"].data
    if fibermap is None or "TARGETID" not in fibermap.columns.names:
        raise SpectraFileError("FIBERMAP has no TARGETID column", path=path)
    n = len(fibermap)
    arms = []
    for arm in _arms(names):
        wave = np.asarray(hdul[f"{arm}{WAVE_SUFFIX}"].data, dtype=np.float64)
        flux = np.asarray(hdul[f"{arm}_FLUX"].data, dtype=np.float32)
        ivar = np.asarray(hdul[f"{arm}_IVAR"].data, dtype=np.float32)
        bits = hdul[f"{arm}_MASK"].data if f"{arm}_MASK" in names else None
        if wave.ndim != 1 or flux.shape != (n, wave.size) or ivar.shape != flux.shape:
            raise SpectraFileError(
                f"arm {arm}: {arm}_WAVELENGTH {wave.shape}, {arm}_FLUX {flux.shape} and "
                f"{arm}_IVAR {ivar.shape} do not match {n} FIBERMAP rows",
                path=path,
            )
        flagged = np.zeros(flux.shape, bool) if bits is None else np.asarray(bits) != 0
        arms.append((wave, flux, ivar, _usable(path, arm, flux, ivar, flagged)))
    wave, flux, ivar, mask = merge_arms(arms)
    meta = _fibermap_meta(fibermap, path)
    header = hdul[f"{_arms(names)[0]}_FLUX"].header
    spectra = Spectra._trusted(
        wave,
        flux,
        ivar,
        mask,
        meta,
        flux_unit=_unit(header.get("BUNIT"), FLUX_UNIT),
        frame=str(hdul[0].header.get("LKFRAME", "observed")),
    )
    if "REDSHIFTS" in names:
        spectra = join_redshifts(spectra, redshift_table(Table(hdul["REDSHIFTS"].data), path))
    if TRUTH_HDU in names:
        spectra = join_truth(spectra, Table(hdul[TRUTH_HDU].data))
    return spectra


def _usable(path: str, arm: str, flux, ivar, flagged) -> np.ndarray:
    """Pixels to use; NaN/inf or negative values that the file calls good mean corruption."""
    claimed = ~flagged & (ivar != 0)
    broken = claimed & (~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0))
    if broken.any():
        rows = np.flatnonzero(broken.any(axis=1))
        raise SpectraFileError(
            f"arm {arm} has NaN, inf or negative values in {int(broken.sum())} unmasked pixels "
            f"(spectra at rows {', '.join(map(str, rows[:10]))})",
            path=path,
        )
    return claimed & (ivar > 0)


def merge_arms(arms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One increasing grid from arm grids; overlapping pixels combined by inverse variance.

    ``arms``: (wave (P_a,), flux, ivar, good (N, P_a)) per arm. Pixels of different arms
    closer than 1 % of a pixel are one pixel (DESI's overlaps agree to ~1e-10 Å).
    """
    waves = np.concatenate([a[0] for a in arms])
    order = np.argsort(waves, kind="stable")
    steps = [np.min(np.diff(a[0])) for a in arms if a[0].size > 1]
    tolerance = 0.01 * (min(steps) if steps else 1.0)
    new_pixel = np.diff(waves[order]) > tolerance
    slot_sorted = np.concatenate([[0], np.cumsum(new_pixel)])
    slot = np.empty_like(slot_sorted)
    slot[order] = slot_sorted
    first = np.concatenate([[True], new_pixel])
    wave = waves[order][first]

    n, p = arms[0][1].shape[0], wave.size
    weighted = np.zeros((n, p))
    weight = np.zeros((n, p))
    plain = np.zeros((n, p))
    count = np.zeros(p)
    start = 0
    for arm_wave, flux, ivar, good in arms:
        at = slot[start : start + arm_wave.size]
        start += arm_wave.size
        iv = np.where(good, ivar, 0).astype(np.float64)
        weighted[:, at] += np.where(good, flux, 0) * iv
        weight[:, at] += iv
        plain[:, at] += np.where(np.isfinite(flux), flux, 0)
        count[at] += 1
    usable = weight > 0
    flux = np.where(usable, weighted / np.where(usable, weight, 1), plain / count)
    return wave, flux.astype(np.float32), weight.astype(np.float32), ~usable


def _fibermap_meta(fibermap, path: str) -> Table:
    columns = fibermap.columns.names
    meta = Table({"targetid": np.asarray(fibermap["TARGETID"], dtype=np.int64)})
    for ours, theirs in (("ra", "TARGET_RA"), ("dec", "TARGET_DEC")):
        if theirs in columns:
            meta[ours] = np.asarray(fibermap[theirs], dtype=np.float64)
    for theirs in ("COADD_FIBERSTATUS", "FIBERSTATUS"):
        if theirs in columns:
            meta["fiberstatus"] = np.asarray(fibermap[theirs], dtype=np.int64)
            break
    if "OBJTYPE" in columns:
        meta["objtype"] = np.char.strip(np.asarray(fibermap["OBJTYPE"]).astype(str))
    meta["z"] = np.ma.masked_all(len(meta), dtype=np.float64)
    meta["spectype"] = np.full(len(meta), "", dtype="U6")
    meta["survey"] = "desi"
    meta["file"] = str(path)
    return meta


def _unit(text: str | None, default: u.UnitBase) -> u.UnitBase:
    if text is None:
        return default
    try:
        return u.Unit(text, format="fits")
    except ValueError:
        return default


def _arm_slices(wave: np.ndarray) -> dict[str, np.ndarray]:
    """Which pixels each arm gets: the DESI ranges where they fit, else thirds that overlap."""
    arms = {arm: (wave >= lo - 1e-6) & (wave <= hi + 1e-6) for arm, (lo, hi) in ARM_RANGES.items()}
    covered = np.logical_or.reduce(list(arms.values()))
    if covered.all() and all(m.sum() >= 2 for m in arms.values()):
        return arms
    p = wave.size
    if p < 12:
        return {"B": np.ones(p, bool)}
    index = np.arange(p)
    cuts = [(0, int(0.36 * p)), (int(0.32 * p), int(0.69 * p)), (int(0.65 * p), p)]
    return {arm: (index >= lo) & (index < hi) for arm, (lo, hi) in zip("BRZ", cuts, strict=True)}


def write_desi(spectra: Spectra, path: Path, overwrite: bool = False) -> None:
    """One coadd file in the archive layout, plus REDSHIFTS and (for mocks) TRUTH HDUs.

    Pixels in two arms carry half the inverse variance in each, so reading the file back
    (which adds the arms' inverse variances) gives the spectra that were written.
    """
    arms = _arm_slices(spectra.wave)
    shared = np.sum(list(arms.values()), axis=0)
    primary = fits.PrimaryHDU()
    primary.header["LKFRAME"] = (spectra.frame, "labkit: observed or rest frame")
    hdus = [primary, _fibermap_hdu(spectra.meta)]
    flux_bunit, ivar_bunit = _bunits(spectra.flux_unit)
    for arm, take in arms.items():
        wave = fits.ImageHDU(spectra.wave[take], name=f"{arm}{WAVE_SUFFIX}")
        wave.header["BUNIT"] = "Angstrom"
        flux = fits.ImageHDU(spectra.flux[:, take], name=f"{arm}_FLUX")
        flux.header["BUNIT"] = flux_bunit
        ivar = fits.ImageHDU(
            (spectra.ivar[:, take] / shared[take]).astype(np.float32), name=f"{arm}_IVAR"
        )
        ivar.header["BUNIT"] = ivar_bunit
        bits = np.where(spectra.mask[:, take], MASK_BIT, 0).astype(np.uint32)
        hdus += [wave, flux, ivar, fits.ImageHDU(bits, name=f"{arm}_MASK")]
    redshifts = _redshifts_hdu(spectra.meta)
    if redshifts is not None:
        hdus.append(redshifts)
    truth = truth_hdu(spectra.meta)
    if truth is not None:
        hdus.append(truth)
    fits.HDUList(hdus).writeto(path, overwrite=overwrite)


def _bunits(unit: u.UnitBase) -> tuple[str, str]:
    if unit == FLUX_UNIT:
        return FLUX_BUNIT, IVAR_BUNIT
    return unit.to_string("fits"), (unit**-2).to_string("fits")


def _column(meta: Table, name: str, default, dtype) -> np.ndarray:
    if name not in meta.colnames:
        return np.full(len(meta), default, dtype=dtype)
    return np.ma.filled(np.ma.asarray(meta[name]), default).astype(dtype)


def _fibermap_hdu(meta: Table) -> fits.BinTableHDU:
    n = len(meta)
    objtype = _column(meta, "objtype", "TGT", "U3") if "objtype" in meta.colnames else None
    columns = [
        fits.Column("TARGETID", "K", array=_column(meta, "targetid", -1, np.int64)),
        fits.Column("COADD_FIBERSTATUS", "J", array=_column(meta, "fiberstatus", 0, np.int32)),
        fits.Column("TARGET_RA", "D", array=_column(meta, "ra", 0.0, np.float64)),
        fits.Column("TARGET_DEC", "D", array=_column(meta, "dec", 0.0, np.float64)),
        fits.Column("OBJTYPE", "3A", array=objtype if objtype is not None else ["TGT"] * n),
    ]
    return fits.BinTableHDU.from_columns(columns, name="FIBERMAP")


def _redshifts_hdu(meta: Table) -> fits.BinTableHDU | None:
    known = ~np.ma.getmaskarray(meta["z"])
    if not known.any():
        return None
    rows = meta[known]
    columns = [
        fits.Column("TARGETID", "K", array=np.asarray(rows["targetid"], dtype=np.int64)),
        fits.Column("Z", "D", array=np.ma.filled(rows["z"], np.nan).astype(np.float64)),
        fits.Column("ZERR", "D", array=_column(rows, "zerr", 0.0, np.float64)),
        fits.Column("ZWARN", "K", array=_column(rows, "zwarn", 0, np.int64)),
        fits.Column("SPECTYPE", "6A", array=_column(rows, "spectype", "", "U6")),
    ]
    return fits.BinTableHDU.from_columns(columns, name="REDSHIFTS")


def write_desi_survey(spectra: Spectra, path: Path, overwrite: bool = False) -> list[Path]:
    """``path`` ending in .fits: one coadd file; otherwise a folder of coadds of up to
    ``FILE_SPECTRA`` spectra each."""
    if path.name.endswith(FITS_SUFFIXES):
        path.parent.mkdir(parents=True, exist_ok=True)
        refuse_existing(path, overwrite)
        write_desi(spectra, path, overwrite)
        return [path]
    prepare_folder(path, overwrite)
    written = []
    for k, start in enumerate(range(0, len(spectra), FILE_SPECTRA)):
        target = path / f"coadd-labkit-{k:04d}.fits"
        refuse_existing(target, overwrite)
        write_desi(spectra[start : start + FILE_SPECTRA], target, overwrite)
        written.append(target)
    return written


register_format(
    SpectraFormat(
        name="desi",
        identify=looks_like_desi,
        read=read_desi,
        write=write_desi_survey,
        looks_for="a DESI coadd (FIBERMAP, B/R/Z_WAVELENGTH, _FLUX, _IVAR)",
    )
)
