"""``Spectra``: many spectra on one wavelength grid, with their metadata.

Arrays are plain numpy (fast, picklable to cluster workers); astropy units meet the user at
the edges: constructors take Quantities, ``wavelength`` and ``flux_density`` give them back.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table, vstack

from labkit.errors import SpectraError, SpectraWarning
from labkit.spectra.grids import as_angstrom, check_wave, log_grid, pixel_edges, union_grid

FLUX_UNIT = u.Unit("1e-17 erg / (s cm2 Angstrom)")
FRAMES = ("observed", "rest")
REQUIRED_COLUMNS = ("targetid", "z", "spectype")


class Spectra:
    """N spectra on one grid.

    - ``wave``: (P,) float64, Å, strictly increasing.
    - ``flux``, ``ivar``: (N, P) float32 in ``flux_unit`` and ``flux_unit**-2``.
    - ``mask``: (N, P) bool, True where a pixel must not be used; such pixels have ivar 0.
    - ``meta``: astropy Table, one row per spectrum, with at least ``targetid`` (int64),
      ``z`` (masked where unknown) and ``spectype`` (str).
    - ``frame``: "observed" or "rest" (after ``preprocess``).

    Non-finite flux or ivar and ivar <= 0 become masked pixels with flux 0 and ivar 0.
    Indexing with an int, slice, index array or bool array gives a new ``Spectra`` (an int
    gives one row); ``Spectra.concatenate`` stacks several.
    """

    def __init__(
        self,
        wave: Any,
        flux: Any,
        ivar: Any,
        mask: Any = None,
        meta: Table | Any = None,
        *,
        flux_unit: u.UnitBase | str = FLUX_UNIT,
        frame: str = "observed",
    ):
        self.wave = check_wave(as_angstrom(wave, "wave"))
        self.flux_unit = u.Unit(flux_unit)
        if frame not in FRAMES:
            raise SpectraError(f"frame must be one of {FRAMES}, got {frame!r}")
        self.frame = frame
        flux = self._values(flux, "flux", self.flux_unit)
        ivar = self._values(ivar, "ivar", self.flux_unit**-2)
        if mask is None:
            mask = np.zeros(flux.shape, dtype=bool)
        mask = np.atleast_2d(np.asarray(mask, dtype=bool))
        for name, array in (("ivar", ivar), ("mask", mask)):
            if array.shape != flux.shape:
                raise SpectraError(f"{name} has shape {array.shape} but flux has {flux.shape}")
        if flux.shape[1] != self.wave.size:
            raise SpectraError(
                f"flux has {flux.shape[1]} pixels per spectrum but wave has {self.wave.size}"
            )
        if np.any(ivar < 0):
            rows = np.flatnonzero(np.any(ivar < 0, axis=1))
            raise SpectraError(f"ivar is negative in rows {_first(rows)}; variances are positive")
        finite = np.isfinite(flux)
        mask = mask | ~finite | ~(ivar > 0)  # NaN ivar fails the comparison too
        self.flux = flux if finite.all() else np.where(finite, flux, 0).astype(np.float32)
        self.ivar = np.where(mask, 0, ivar).astype(np.float32) if mask.any() else ivar
        self.mask = mask
        self.meta = _meta_table(meta, flux.shape[0])

    def _values(self, values: Any, name: str, unit: u.UnitBase) -> np.ndarray:
        if isinstance(values, u.Quantity):
            wave = self.wave * u.AA
            try:
                values = values.to_value(unit, equivalencies=u.spectral_density(wave))
            except u.UnitConversionError:
                raise SpectraError(
                    f"{name} in {values.unit} cannot be expressed in {unit}"
                ) from None
        array = np.atleast_2d(np.asarray(values, dtype=np.float32))
        if array.ndim != 2:
            raise SpectraError(f"{name} must be (N spectra, P pixels), got shape {array.shape}")
        return array

    @classmethod
    def _trusted(cls, wave, flux, ivar, mask, meta, *, flux_unit=FLUX_UNIT, frame="observed"):
        """Build without copying or checking: for arrays labkit itself made consistent."""
        self = cls.__new__(cls)
        self.wave, self.flux, self.ivar, self.mask = wave, flux, ivar, mask
        self.meta, self.flux_unit, self.frame = meta, u.Unit(flux_unit), frame
        return self

    def with_meta(self, meta: Table) -> Spectra:
        """The same pixels (shared, not copied) with ``meta`` in place of this one's."""
        return Spectra._trusted(
            self.wave,
            self.flux,
            self.ivar,
            self.mask,
            meta,
            flux_unit=self.flux_unit,
            frame=self.frame,
        )

    # -- the user-facing view ---------------------------------------------------------
    @property
    def wavelength(self) -> u.Quantity:
        """``wave`` as an astropy Quantity in Å."""
        return self.wave * u.AA

    @property
    def flux_density(self) -> u.Quantity:
        """``flux`` as an astropy Quantity in ``flux_unit``."""
        return self.flux * self.flux_unit

    @property
    def n_pixels(self) -> int:
        return self.wave.size

    def __len__(self) -> int:
        return self.flux.shape[0]

    def __getitem__(self, key) -> Spectra:
        if isinstance(key, (int, np.integer)):
            key = [range(len(self))[key]]  # IndexError when out of range, like a list
        elif isinstance(key, tuple):
            raise SpectraError("index Spectra by row only; pixels share one grid")
        return Spectra._trusted(
            self.wave,
            self.flux[key],
            self.ivar[key],
            self.mask[key],
            self.meta[key],
            flux_unit=self.flux_unit,
            frame=self.frame,
        )

    def copy(self) -> Spectra:
        return Spectra._trusted(
            self.wave.copy(),
            self.flux.copy(),
            self.ivar.copy(),
            self.mask.copy(),
            self.meta.copy(),
            flux_unit=self.flux_unit,
            frame=self.frame,
        )

    def __repr__(self) -> str:
        n = len(self)
        known = int((~np.ma.getmaskarray(self.meta["z"])).sum()) if n else 0
        types = Counter(str(t) for t in self.meta["spectype"]).most_common(3)
        kinds = ", ".join(f"{t or '?'} {c}" for t, c in types)
        return (
            f"<Spectra {n} × {self.n_pixels} px, {self.wave[0]:.1f}–{self.wave[-1]:.1f} Å "
            f"{self.frame}, z known {known}/{n}{'; ' + kinds if kinds else ''}>"
        )


def concatenate(parts: Sequence[Spectra]) -> Spectra:
    """Stack spectra into one, row order kept.

    Grids that are slices of one regular grid (SDSS files starting at different log λ, DESI
    files) are padded with masked pixels onto their union. Other mixes are resampled,
    flux-conserving, onto a common log-λ grid of 1e-4 dex, with a ``SpectraWarning``.
    """
    parts = list(parts)
    if not parts:
        raise SpectraError("nothing to concatenate: no spectra were given")
    for part in parts:
        if not isinstance(part, Spectra):
            raise SpectraError(f"can only concatenate Spectra, got {type(part).__name__}")
    first = parts[0]
    for part in parts[1:]:
        if part.frame != first.frame:
            raise SpectraError("cannot concatenate observed-frame and rest-frame spectra")
        if part.flux_unit != first.flux_unit:
            raise SpectraError(
                f"cannot concatenate spectra in {first.flux_unit} and {part.flux_unit}"
            )
    union = union_grid([p.wave for p in parts])
    if union is None:
        parts, union = _onto_common_log_grid(parts)
    wave, offsets = union
    n = sum(len(p) for p in parts)
    flux = np.zeros((n, wave.size), dtype=np.float32)
    ivar = np.zeros((n, wave.size), dtype=np.float32)
    mask = np.ones((n, wave.size), dtype=bool)
    row = 0
    for part, offset in zip(parts, offsets, strict=True):
        span = (slice(row, row + len(part)), slice(offset, offset + part.n_pixels))
        flux[span], ivar[span], mask[span] = part.flux, part.ivar, part.mask
        row += len(part)
    meta = _stack_meta([p.meta for p in parts])
    return Spectra._trusted(
        wave, flux, ivar, mask, meta, flux_unit=first.flux_unit, frame=first.frame
    )


def _onto_common_log_grid(parts: list[Spectra]):
    from labkit.spectra.resample import resample

    lo = min(p.wave[0] for p in parts)
    hi = max(p.wave[-1] for p in parts)
    wave = log_grid(lo, hi)
    edges = pixel_edges(wave)
    warnings.warn(
        "these spectra are on grids that do not line up; they were resampled (flux-conserving) "
        f"onto a common log-λ grid of {wave.size} pixels, 1e-4 dex each",
        SpectraWarning,
        stacklevel=3,
    )
    moved = []
    for part in parts:
        flux, ivar, mask = resample(part.wave, part.flux, part.ivar, part.mask, edges)
        moved.append(
            Spectra._trusted(
                wave,
                flux.astype(np.float32),
                ivar.astype(np.float32),
                mask,
                part.meta,
                flux_unit=part.flux_unit,
                frame=part.frame,
            )
        )
    return moved, (wave, [0] * len(moved))


def _stack_meta(tables: list[Table]) -> Table:
    if len(tables) == 1:
        return tables[0].copy()
    with warnings.catch_warnings():  # differing column metadata is expected across files
        warnings.simplefilter("ignore")
        meta = vstack(tables, join_type="outer", metadata_conflicts="silent")
    return _meta_table(meta, sum(len(t) for t in tables))


def _meta_table(meta: Any, n: int) -> Table:
    """A Table of ``n`` rows with the required columns in their documented types."""
    if meta is None:
        meta = Table({"targetid": np.arange(n, dtype=np.int64)})
    elif not isinstance(meta, Table):
        try:
            meta = Table(meta)
        except Exception as exc:
            raise SpectraError(
                f"meta must be an astropy Table or convertible to one: {exc}"
            ) from None
    else:
        meta = meta.copy(copy_data=False)
    if len(meta) != n:
        raise SpectraError(f"meta has {len(meta)} rows but there are {n} spectra")
    for name in list(meta.colnames):
        if name != name.lower() and name.lower() not in meta.colnames:
            meta.rename_column(name, name.lower())
    if "targetid" not in meta.colnames:
        raise SpectraError("meta needs a 'targetid' column (one integer id per spectrum)")
    if np.ma.is_masked(meta["targetid"]):
        raise SpectraError("every spectrum needs a targetid; meta['targetid'] has masked entries")
    meta["targetid"] = np.asarray(meta["targetid"]).astype(np.int64)
    z = (
        np.ma.masked_invalid(np.ma.asarray(meta["z"], dtype=np.float64))
        if "z" in meta.colnames
        else None
    )
    if z is None:
        z = np.ma.masked_all(n, dtype=np.float64)
    meta["z"] = MaskedColumn(np.ma.getdata(z), mask=np.ma.getmaskarray(z), dtype=np.float64)
    if "spectype" not in meta.colnames:
        meta["spectype"] = np.full(n, "", dtype="U6")
    else:
        meta["spectype"] = (
            np.asarray([str(s).strip() for s in np.ma.filled(meta["spectype"], "")], dtype=str)
            if n
            else np.zeros(0, dtype="U6")
        )
    return meta


def _first(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f" and {rows.size - limit} more" if rows.size > limit else "")


Spectra.concatenate = staticmethod(concatenate)
