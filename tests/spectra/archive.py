"""Archive-layout files written with astropy alone (no labkit), to test labkit's readers.

The DESI coadd mirrors the real files in ../shared/data/desi (DESI's fuji/iron coadds):
same HDUs in the same order, column names and formats, dtypes (uint32 masks stored with
BZERO), shapes, BUNIT keywords; dead fibres with every ivar 0 and negative TARGETIDs; arm
grids whose overlaps agree only to float rounding; no redshifts. The SDSS spec-lite file
follows the SDSS DR data model (COADD, SPALL, SPZLINE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

FIBERMAP = (
    "TARGETID:K PETAL_LOC:I DEVICE_LOC:J LOCATION:K FIBER:J COADD_FIBERSTATUS:J TARGET_RA:D "
    "TARGET_DEC:D PMRA:E PMDEC:E REF_EPOCH:E LAMBDA_REF:E FA_TARGET:K FA_TYPE:B OBJTYPE:3A "
    "FIBERASSIGN_X:E FIBERASSIGN_Y:E PRIORITY:J SUBPRIORITY:D OBSCONDITIONS:J RELEASE:I "
    "BRICKNAME:8A BRICKID:J BRICK_OBJID:J MORPHTYPE:4A EBV:E FLUX_G:E FLUX_R:E FLUX_Z:E "
    "FLUX_W1:E FLUX_W2:E FLUX_IVAR_G:E FLUX_IVAR_R:E FLUX_IVAR_Z:E FLUX_IVAR_W1:E FLUX_IVAR_W2:E "
    "FIBERFLUX_G:E FIBERFLUX_R:E FIBERFLUX_Z:E FIBERTOTFLUX_G:E FIBERTOTFLUX_R:E FIBERTOTFLUX_Z:E "
    "MASKBITS:I SERSIC:E SHAPE_R:E SHAPE_E1:E SHAPE_E2:E REF_ID:K REF_CAT:2A "
    "GAIA_PHOT_G_MEAN_MAG:E GAIA_PHOT_BP_MEAN_MAG:E GAIA_PHOT_RP_MEAN_MAG:E PARALLAX:E "
    "PHOTSYS:1A PRIORITY_INIT:K NUMOBS_INIT:K SV3_DESI_TARGET:K SV3_BGS_TARGET:K "
    "SV3_MWS_TARGET:K SV3_SCND_TARGET:K DESI_TARGET:K BGS_TARGET:K MWS_TARGET:K PLATE_RA:D "
    "PLATE_DEC:D TILEID:J COADD_NUMEXP:I COADD_EXPTIME:E COADD_NUMNIGHT:I COADD_NUMTILE:I "
    "MEAN_DELTA_X:E RMS_DELTA_X:E MEAN_DELTA_Y:E RMS_DELTA_Y:E MEAN_FIBER_RA:D STD_FIBER_RA:E "
    "MEAN_FIBER_DEC:D STD_FIBER_DEC:E MEAN_PSF_TO_FIBER_SPECFLUX:E MEAN_FIBER_X:E MEAN_FIBER_Y:E"
)
EXP_FIBERMAP = (
    "TARGETID:K PRIORITY:J SUBPRIORITY:D NIGHT:J EXPID:J MJD:D TILEID:J EXPTIME:D PETAL_LOC:I "
    "DEVICE_LOC:J LOCATION:K FIBER:J FIBERSTATUS:J FIBERASSIGN_X:E FIBERASSIGN_Y:E LAMBDA_REF:E "
    "PLATE_RA:D PLATE_DEC:D NUM_ITER:K FIBER_X:D FIBER_Y:D DELTA_X:D DELTA_Y:D FIBER_RA:D "
    "FIBER_DEC:D PSF_TO_FIBER_SPECFLUX:D"
)
SCORES = "TARGETID:K " + " ".join(
    [
        f"{k}_COADD_{q}_{a}:E"
        for a in "BRZ"
        for k, q in (("INTEG", "FLUX"), ("MEDIAN", "FLUX"), ("MEDIAN", "SNR"))
    ]
    + [
        f"TSNR2_{t}_{a}:E"
        for a in "BRZ"
        for t in ("GPBDARK", "ELG", "GPBBRIGHT", "LYA", "BGS", "GPBBACKUP", "QSO", "LRG")
    ]
    + [
        f"TSNR2_{t}:E"
        for t in ("GPBDARK", "ELG", "GPBBRIGHT", "LYA", "BGS", "GPBBACKUP", "QSO", "LRG")
    ]
)
# DESI arm grids: (first, last) Å at 0.8 Å; neighbours overlap on 51 (B/R) and 126 (R/Z) pixels
ARMS = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
FLUX_BUNIT = "10**-17 erg/(s cm2 Angstrom)"
IVAR_BUNIT = "10**+34 (s2 cm4 Angstrom2) / erg2"
N_DIAGONALS = 11


STEP = 0.8000000000001819  # the step DESI's grids carry, 0.8 Å plus float rounding


def arm_waves() -> dict[str, np.ndarray]:
    """Arm grids as DESI's pipeline makes them: overlaps equal only to float rounding."""
    return {
        arm: lo + STEP * np.arange(int(round((hi - lo) / 0.8)) + 1)
        for arm, (lo, hi) in ARMS.items()
    }


def _table(spec: str, n: int, name: str, values: dict) -> fits.BinTableHDU:
    columns = []
    for item in spec.split():
        column, form = item.split(":")
        if column in values:
            array = values[column]
        elif form.endswith("A"):
            array = np.array([""] * n)
        else:
            array = np.zeros(n)
        columns.append(fits.Column(name=column, format=form, array=array))
    return fits.BinTableHDU.from_columns(columns, name=name)


def write_desi_coadd(
    path: Path,
    targetid: np.ndarray,
    flux: dict[str, np.ndarray],
    ivar: dict[str, np.ndarray],
    mask: dict[str, np.ndarray] | None = None,
    redshifts: fits.BinTableHDU | None = None,
) -> Path:
    """A DESI coadd file; ``flux``/``ivar``/``mask`` per arm, each (N, P_arm)."""
    n = len(targetid)
    waves = arm_waves()
    primary = fits.PrimaryHDU()
    for key, value in (
        ("SPGRP", "cumulative"),
        ("SPGRPVAL", 20210419),
        ("NIGHT", 20210419),
        ("TILEID", 169),
        ("SPECTRO", 5),
        ("PETAL", 5),
        ("FIBERMIN", 2500),
        ("INFIL000", "spectra-5-169-thru20210419.fits"),
        ("LONGSTRN", "OGIP 1.0"),
    ):
        primary.header[key] = value
    alive = np.array([iv.any() for iv in ivar["B"]])
    fibermap = _table(
        FIBERMAP,
        n,
        "FIBERMAP",
        {
            "TARGETID": np.asarray(targetid, np.int64),
            "COADD_FIBERSTATUS": np.where(alive, 0, 512),
            "OBJTYPE": np.where(alive, "TGT", ""),
            "TARGET_RA": np.linspace(150.0, 150.1, n),
            "TARGET_DEC": np.linspace(2.0, 2.1, n),
            "FIBER": 2500 + np.arange(n),
            "TILEID": np.full(n, 169),
        },
    )
    fibermap.header["LONGSTRN"] = "OGIP 1.0"
    exposures = _table(EXP_FIBERMAP, 2 * n, "EXP_FIBERMAP", {"TARGETID": np.repeat(targetid, 2)})
    hdus = [primary, fibermap, exposures]
    for arm, wave in waves.items():
        w = fits.ImageHDU(wave.astype(np.float64), name=f"{arm}_WAVELENGTH")
        w.header["BUNIT"] = "Angstrom"
        f = fits.ImageHDU(flux[arm].astype(np.float32), name=f"{arm}_FLUX")
        f.header["BUNIT"] = FLUX_BUNIT
        iv = fits.ImageHDU(ivar[arm].astype(np.float32), name=f"{arm}_IVAR")
        iv.header["BUNIT"] = IVAR_BUNIT
        bits = np.zeros(flux[arm].shape, np.uint32) if mask is None else mask[arm].astype(np.uint32)
        m = fits.ImageHDU(bits, name=f"{arm}_MASK")
        resolution = np.zeros((n, N_DIAGONALS, wave.size), np.float32)
        kernel = np.exp(-0.5 * (np.arange(N_DIAGONALS) - 5) ** 2 / 1.1**2)
        resolution[alive] = (kernel / kernel.sum())[None, :, None]
        r = fits.ImageHDU(resolution, name=f"{arm}_RESOLUTION")
        hdus += [w, f, iv, m, r]
    hdus.append(_table(SCORES, n, "SCORES", {"TARGETID": np.asarray(targetid, np.int64)}))
    if redshifts is not None:
        hdus.append(redshifts)
    fits.HDUList(hdus).writeto(path)
    return path


def redrock_hdu(targetid, z, spectype) -> fits.BinTableHDU:
    """A redrock ``REDSHIFTS`` table (the columns labkit and users care about)."""
    n = len(targetid)
    return fits.BinTableHDU.from_columns(
        [
            fits.Column("TARGETID", "K", array=np.asarray(targetid, np.int64)),
            fits.Column("CHI2", "D", array=np.ones(n)),
            fits.Column("COEFF", "10D", array=np.zeros((n, 10))),
            fits.Column("Z", "D", array=np.asarray(z, np.float64)),
            fits.Column("ZERR", "D", array=np.full(n, 1e-4)),
            fits.Column("ZWARN", "K", array=np.zeros(n, np.int64)),
            fits.Column("NPIXELS", "K", array=np.full(n, 7781)),
            fits.Column("SPECTYPE", "6A", array=np.asarray(spectype)),
            fits.Column("SUBTYPE", "20A", array=[""] * n),
            fits.Column("NCOEFF", "K", array=np.full(n, 10)),
            fits.Column("DELTACHI2", "D", array=np.full(n, 100.0)),
        ],
        name="REDSHIFTS",
    )


def write_redrock(path: Path, targetid, z, spectype) -> Path:
    """A redrock file: PRIMARY, REDSHIFTS, FIBERMAP (as DESI writes them)."""
    fibermap = fits.BinTableHDU.from_columns(
        [fits.Column("TARGETID", "K", array=np.asarray(targetid, np.int64))], name="FIBERMAP"
    )
    fits.HDUList([fits.PrimaryHDU(), redrock_hdu(targetid, z, spectype), fibermap]).writeto(path)
    return path


def write_sdss_spec(
    path: Path,
    loglam: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    and_mask: np.ndarray,
    *,
    plate: int,
    mjd: int,
    fiberid: int,
    z: float,
    cls: str,
) -> Path:
    """An SDSS spec-lite file: HDU 1 COADD, HDU 2 SPALL (one row), HDU 3 SPZLINE."""
    primary = fits.PrimaryHDU()
    for key, value in (
        ("TELESCOP", "SDSS 2.5-M"),
        ("PLATEID", plate),
        ("MJD", mjd),
        ("FIBERID", fiberid),
        ("BUNIT", "1E-17 erg/cm^2/s/Ang"),
        ("COEFF0", float(loglam[0])),
        ("COEFF1", 1e-4),
    ):
        primary.header[key] = value
    p = loglam.size
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column("flux", "E", array=flux.astype(np.float32)),
            fits.Column("loglam", "E", array=loglam.astype(np.float32)),
            fits.Column("ivar", "E", array=ivar.astype(np.float32)),
            fits.Column("and_mask", "J", array=and_mask.astype(np.int32)),
            fits.Column("or_mask", "J", array=and_mask.astype(np.int32)),
            fits.Column("wdisp", "E", array=np.full(p, 1.1, np.float32)),
            fits.Column("sky", "E", array=np.full(p, 3.0, np.float32)),
            fits.Column("model", "E", array=flux.astype(np.float32)),
        ],
        name="COADD",
    )
    spall = fits.BinTableHDU.from_columns(
        [
            fits.Column("PROGRAMNAME", "16A", array=["boss"]),
            fits.Column("PLATE", "J", array=[plate]),
            fits.Column("MJD", "J", array=[mjd]),
            fits.Column("FIBERID", "J", array=[fiberid]),
            fits.Column("RUN2D", "8A", array=["v5_13_2"]),
            fits.Column("CLASS", "6A", array=[cls]),
            fits.Column("SUBCLASS", "21A", array=[""]),
            fits.Column("Z", "E", array=[z]),
            fits.Column("Z_ERR", "E", array=[1e-4]),
            fits.Column("ZWARNING", "J", array=[0]),
            fits.Column("PLUG_RA", "D", array=[180.0]),
            fits.Column("PLUG_DEC", "D", array=[10.0]),
            fits.Column("SPECOBJID", "19A", array=[str(plate * 10**9 + fiberid)]),
        ],
        name="SPALL",
    )
    zline = fits.BinTableHDU.from_columns(
        [
            fits.Column("LINENAME", "13A", array=["H_alpha"]),
            fits.Column("LINEWAVE", "D", array=[6564.61]),
        ],
        name="SPZLINE",
    )
    fits.HDUList([primary, coadd, spall, zline]).writeto(path)
    return path
