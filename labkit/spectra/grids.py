"""Wavelength grids: pixel edges, log-λ grids, and how several grids line up.

Survey grids are regular: DESI's is linear in Å (0.8 Å steps), SDSS's is linear in
log10 λ (1e-4 dex steps, every file a slice of one global grid). Grids that are slices of
one regular grid can be stacked by padding; anything else needs resampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy import units as u

from labkit.errors import SpectraError

SDSS_DLOG = 1e-4  # dex per pixel of the SDSS/BOSS coadd grid
# How far (in steps) a grid may stray from regular and still count as regular:
# float32 loglam in SDSS files is good to ~5e-3 of a step.
REGULAR_TOLERANCE = 0.02
# Regular enough that pixel positions may be computed rather than searched for.
EXACT_TOLERANCE = 1e-6


def as_angstrom(values, what: str = "wavelength") -> np.ndarray:
    """A float64 array in Å from numbers (taken as Å) or an astropy length Quantity."""
    if isinstance(values, u.Quantity):
        try:
            values = values.to_value(u.AA)
        except u.UnitConversionError:
            raise SpectraError(
                f"{what} must be a length (e.g. Å or nm), got {values.unit}"
            ) from None
    return np.asarray(values, dtype=np.float64)


def check_wave(wave: np.ndarray, what: str = "wave") -> np.ndarray:
    """Refuse grids that no spectrum can live on: not 1-D, non-finite, not increasing."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2:
        raise SpectraError(f"{what} must be a 1-D grid of at least 2 wavelengths, got {wave.shape}")
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise SpectraError(f"{what} must hold finite, positive wavelengths in Å")
    if np.any(np.diff(wave) <= 0):
        raise SpectraError(f"{what} must increase strictly from pixel to pixel")
    return wave


def pixel_edges(wave: np.ndarray) -> np.ndarray:
    """P+1 pixel edges around P centres: midpoints inside, half a step beyond the ends.

    Midpoints are taken in log λ for grids regular in log λ, so their edges stay regular.
    """
    shape = regularity(wave, EXACT_TOLERANCE)
    if shape is not None and shape.kind == "log":
        return 10.0 ** (shape.start + (np.arange(wave.size + 1) - 0.5) * shape.step)
    mid = 0.5 * (wave[1:] + wave[:-1])
    first = wave[0] - (mid[0] - wave[0])
    last = wave[-1] + (wave[-1] - mid[-1])
    return np.concatenate([[first], mid, [last]])


def log_grid(start, stop, dlog: float = SDSS_DLOG) -> np.ndarray:
    """Wavelengths 10**(k*dlog) Å for every integer k with start <= λ <= stop.

    Pinning the grid to integer multiples of ``dlog`` (as SDSS does) makes grids made for
    different ranges slices of one another, so they stack without resampling.
    """
    start, stop = as_angstrom(start, "start"), as_angstrom(stop, "stop")
    if not (np.isfinite(start) and np.isfinite(stop) and 0 < start < stop):
        raise SpectraError(f"a log grid needs 0 < start < stop, got {start} and {stop}")
    if not (np.isfinite(dlog) and dlog > 0):
        raise SpectraError(f"dlog must be a positive number of dex per pixel, got {dlog}")
    first = int(np.ceil(np.log10(start) / dlog - 1e-9))
    last = int(np.floor(np.log10(stop) / dlog + 1e-9))
    if last - first < 1:
        raise SpectraError(f"the range {start}–{stop} Å holds fewer than 2 pixels of {dlog} dex")
    return 10.0 ** (np.arange(first, last + 1) * dlog)


@dataclass(frozen=True)
class Regular:
    """A grid regular in ``kind`` ("linear": Å, "log": log10 Å) with step ``step``."""

    kind: str
    step: float
    start: float  # first pixel, in the grid's coordinate

    def coord(self, wave: np.ndarray) -> np.ndarray:
        return np.log10(wave) if self.kind == "log" else wave

    def values(self, coords: np.ndarray) -> np.ndarray:
        return 10.0**coords if self.kind == "log" else coords


def regularity(wave: np.ndarray, tolerance: float = REGULAR_TOLERANCE) -> Regular | None:
    """How ``wave`` is regular (linear or log, whichever fits better), or None if irregular."""
    best, best_error = None, np.inf
    for kind in ("linear", "log"):
        coord = np.log10(wave) if kind == "log" else wave
        step = (coord[-1] - coord[0]) / (coord.size - 1)
        error = np.max(np.abs(np.diff(coord) - step)) / step
        if error <= tolerance and error < best_error:
            best, best_error = Regular(kind, float(step), float(coord[0])), error
    return best


def union_grid(waves: list[np.ndarray]) -> tuple[np.ndarray, list[int]] | None:
    """The grid that holds every grid in ``waves`` as a slice, and each one's offset.

    None when they are not slices of one regular grid (then they need resampling).
    """
    first = waves[0]
    if all(w.shape == first.shape and np.array_equal(w, first) for w in waves):
        return first, [0] * len(waves)
    shapes = [regularity(w) for w in waves]
    if any(s is None for s in shapes):
        return None
    kind, step = shapes[0].kind, shapes[0].step
    if any(s.kind != kind or abs(s.step - step) > 1e-6 * step for s in shapes):
        return None
    origin = min(s.start for s in shapes)
    offsets = []
    for s in shapes:
        shift = (s.start - origin) / step
        if abs(shift - round(shift)) > REGULAR_TOLERANCE:
            return None
        offsets.append(round(shift))
    size = max(o + w.size for o, w in zip(offsets, waves, strict=True))
    wave = shapes[0].values(origin + np.arange(size) * step)
    for offset, w in zip(offsets, waves, strict=True):  # keep the files' own values exactly
        wave[offset : offset + w.size] = w
    if np.any(np.diff(wave) <= 0):
        return None
    return wave, offsets


def positions(wave: np.ndarray, edges: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Where ``edges`` ((M+1,) or (N, M+1)), times ``scale`` per row, fall on ``wave``'s pixels.

    Returns fractional pixel positions in [0, P] (0 = first pixel's left edge), clamped
    outside the grid. Regular grids get them by arithmetic, others by interpolation.
    """
    edges = np.atleast_2d(edges)
    scale = np.ones(edges.shape[0]) if scale is None else np.asarray(scale, dtype=np.float64)
    shape = regularity(wave, EXACT_TOLERANCE)
    if shape is not None and shape.kind == "log":
        origin = shape.start - 0.5 * shape.step
        pos = np.log10(edges)
        pos += (np.log10(scale) - origin)[:, None]
        pos /= shape.step
    elif shape is not None:
        origin = shape.start - 0.5 * shape.step
        pos = edges * (scale / shape.step)[:, None]
        pos -= origin / shape.step
    else:
        stops = pixel_edges(wave)
        pos = np.interp(edges * scale[:, None], stops, np.arange(stops.size, dtype=float))
    return np.clip(pos, 0, wave.size, out=pos)
