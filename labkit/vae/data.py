"""Turn a ``Spectra`` into the arrays training needs, refusing what would train garbage.

The model sees two N x P float32 arrays: ``flux`` and ``weight`` (the inverse variance where a
pixel is usable, 0 where it is masked). Masked pixels get flux 0, so whatever the file held
there (NaN included) can never reach the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from labkit.errors import TrainingDataError

# Relative tolerance on the step in log(wavelength): preprocess writes an exact log grid,
# float32 storage keeps it to ~1e-7; raw instrument grids (linear in Å) miss it by far.
LOG_STEP_RTOL = 1e-3


@dataclass
class TrainingArrays:
    """What every trainer (in-process, Ray worker, Dask worker) consumes."""

    wave: np.ndarray  # (P,) rest-frame Å, uniform in log
    flux: np.ndarray  # (N, P) float32, 0 where masked
    weight: np.ndarray  # (N, P) float32, ivar where usable else 0

    def __len__(self) -> int:
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        return self.flux.shape[1]

    def subset(self, index: np.ndarray) -> TrainingArrays:
        return TrainingArrays(self.wave, self.flux[index], self.weight[index])


def training_arrays(spectra: Any, what: str = "spectra") -> TrainingArrays:
    """Check ``spectra`` (a ``labkit.spectra.Spectra`` after ``preprocess``) and convert it.

    Raises ``TrainingDataError`` naming the problem: not a Spectra, empty, not on one
    log-λ rest-frame grid, NaN/inf in usable pixels, negative or NaN ivar.
    """
    for name in ("wave", "flux", "ivar", "mask"):
        if not hasattr(spectra, name):
            raise TrainingDataError(
                f"{what} must be a labkit.spectra.Spectra (wave, flux, ivar, mask, meta); "
                f"got {type(spectra).__name__} without .{name}"
            )
    wave = np.asarray(spectra.wave, dtype=np.float64)
    flux = np.asarray(spectra.flux)
    ivar = np.asarray(spectra.ivar)
    mask = np.asarray(spectra.mask, dtype=bool)
    if flux.ndim != 2 or flux.shape[0] == 0:
        raise TrainingDataError(f"{what} is empty: there is nothing to train on or to score")
    check_grid(wave, flux.shape[1], what)
    _check_rest_frame(spectra, what)
    for name, array in (("ivar", ivar), ("mask", mask)):
        if array.shape != flux.shape:
            raise TrainingDataError(
                f"{what}.{name} has shape {array.shape} but flux has {flux.shape}"
            )
    bad_ivar = ~np.isfinite(ivar) | (ivar < 0)
    bad_ivar &= ~mask
    if bad_ivar.any():
        raise TrainingDataError(
            f"{what} has NaN, inf or negative ivar in unmasked pixels of {_rows(bad_ivar, spectra)}"
        )
    usable = ~mask & (ivar > 0)
    bad_flux = usable & ~np.isfinite(flux)
    if bad_flux.any():
        raise TrainingDataError(
            f"{what} has NaN or inf flux in unmasked pixels of {_rows(bad_flux, spectra)}; "
            "mask those pixels (mask=True, ivar=0) or drop the spectra"
        )
    weight = np.where(usable, ivar, 0).astype(np.float32)
    clean = np.where(usable, flux, 0).astype(np.float32)
    if not usable.any():
        raise TrainingDataError(f"{what} has no usable pixel: every pixel is masked or has ivar 0")
    return TrainingArrays(wave=wave, flux=clean, weight=weight)


def check_grid(wave: np.ndarray, n_pixels: int, what: str = "spectra") -> None:
    """One common grid, increasing and uniform in log λ, as ``labkit.spectra.preprocess`` makes."""
    if wave.ndim != 1 or wave.shape[0] != n_pixels:
        raise TrainingDataError(
            f"{what} are not on one common grid: wave has shape {wave.shape} but each spectrum "
            f"has {n_pixels} pixels; run labkit.spectra.preprocess first"
        )
    if n_pixels < 2:
        raise TrainingDataError(f"{what} have {n_pixels} pixel(s); a spectrum needs at least 2")
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise TrainingDataError(f"{what} have non-finite or non-positive wavelengths")
    steps = np.diff(np.log(wave))
    if np.any(steps <= 0):
        raise TrainingDataError(
            f"{what} are not on one increasing wavelength grid; run labkit.spectra.preprocess first"
        )
    spread = (steps.max() - steps.min()) / steps.mean()
    if spread > LOG_STEP_RTOL:
        raise TrainingDataError(
            f"{what} are not on a log-λ grid (log-step varies by {spread:.1%}): raw instrument "
            "spectra must go through labkit.spectra.preprocess, which puts them in the rest "
            "frame on one common log-λ grid"
        )


def _check_rest_frame(spectra: Any, what: str) -> None:
    # preprocess marks its output; spectra from elsewhere pass on the grid check alone
    frame = getattr(spectra, "frame", None)
    if frame is None:
        meta = getattr(getattr(spectra, "meta", None), "meta", None) or {}
        frame = meta.get("frame", meta.get("FRAME"))
    if frame is not None and str(frame).lower() != "rest":
        raise TrainingDataError(
            f"{what} are in the {frame} frame; run labkit.spectra.preprocess to move them to the "
            "rest frame first"
        )


def _rows(bad: np.ndarray, spectra: Any) -> str:
    rows = np.flatnonzero(bad.any(axis=1))
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    label = f"{len(rows)} spectra (rows {shown})"
    meta = getattr(spectra, "meta", None)
    try:
        ids = [str(meta["targetid"][r]) for r in rows[:5]]
    except (TypeError, KeyError, IndexError):
        return label
    return f"{label}, targetid {', '.join(ids)}" + (", ..." if len(rows) > 5 else "")


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/validation split; at least one spectrum stays on each side when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def pixel_statistics(arrays: TrainingArrays) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and spread over the spectra that observe each pixel.

    The network works on standardised flux; pixels nobody observes get mean 0, spread 1.
    """
    seen = arrays.weight > 0
    count = seen.sum(axis=0)
    total = np.where(seen, arrays.flux, 0).sum(axis=0, dtype=np.float64)
    mean = np.divide(total, count, out=np.zeros(arrays.n_pixels), where=count > 0)
    deviation = np.where(seen, arrays.flux - mean, 0)
    var = np.divide(
        (deviation.astype(np.float64) ** 2).sum(axis=0),
        count - 1,
        out=np.ones(arrays.n_pixels),
        where=count > 1,
    )
    std = np.sqrt(var)
    floor = max(float(np.median(std[count > 1])) * 1e-3, 1e-6) if (count > 1).any() else 1.0
    std = np.where((count > 1) & (std > floor), std, np.where(count > 1, floor, 1.0))
    return mean.astype(np.float32), std.astype(np.float32)
