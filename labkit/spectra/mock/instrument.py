"""A toy spectrograph: wavelength grids, throughput, night sky, noise and masks.

It gives mock spectra the marks real ones carry: noise that follows sky and source
photons, brighter sky emission lines whose pixels are masked (with residuals left in the
flux), cosmic-ray hits, and lower throughput at the ends and at the arm crossovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from labkit.spectra.grids import SDSS_DLOG, log_grid, pixel_edges

# Sky emission lines (vacuum Å) with integrated brightness in units of the sky continuum × Å
SKY_LINES = ((5578.9, 60.0), (5891.6, 10.0), (5897.6, 10.0), (6302.0, 25.0), (6365.5, 8.0))
OH_BANDS = ((6830, 7020), (7240, 7460), (7700, 8060), (8280, 8560), (8750, 9060), (9300, 10400))
SKY_MASK_LEVEL = 3.0  # pixels where sky lines exceed this × the sky continuum are masked


@dataclass(frozen=True)
class Instrument:
    name: str
    wave: np.ndarray  # pixel centres, Å
    resolution_sigma: float  # line spread, Å (Gaussian sigma)
    crossovers: tuple[float, ...]  # dichroic crossovers between arms, Å
    noise_scale: float  # variance per (flux unit) per pixel at unit throughput

    @property
    def widths(self) -> np.ndarray:
        return np.diff(pixel_edges(self.wave))


@lru_cache(maxsize=4)
def instrument(name: str) -> Instrument:
    """ "desi": 3600–9824 Å in 0.8 Å pixels; "sdss": BOSS 3563–10390 Å at 1e-4 dex."""
    if name == "desi":
        wave = np.round(3600.0 + 0.8 * np.arange(7781), 6)
        return Instrument("desi", wave, 0.75, (5780.0, 7570.0), 0.25)
    if name == "sdss":
        return Instrument("sdss", log_grid(3563.0, 10390.0, SDSS_DLOG), 1.2, (6000.0,), 0.15)
    raise ValueError(f"unknown instrument {name!r}; use 'desi' or 'sdss'")


def throughput(inst: Instrument) -> np.ndarray:
    """Fraction of photons detected: falls off at both ends and dips at arm crossovers."""
    x = (inst.wave - 6300.0) / 3400.0
    curve = 0.12 + 0.83 * np.exp(-(x**4))
    for at in inst.crossovers:
        curve *= 1.0 - 0.35 * np.exp(-0.5 * ((inst.wave - at) / 20.0) ** 2)
    return curve


@lru_cache(maxsize=4)
def _sky(name: str) -> tuple[np.ndarray, np.ndarray]:
    inst = instrument(name)
    wave = inst.wave
    continuum = 1.2 + 0.6 * (wave - 3600.0) / 6000.0
    lines = np.zeros_like(wave)
    rng = np.random.default_rng(20_211_219)  # a fixed OH forest, the same in every mock
    listed = list(SKY_LINES)
    for lo, hi in OH_BANDS:
        centres = rng.uniform(lo, hi, 14)
        listed += [
            (c, s) for c, s in zip(centres, rng.lognormal(np.log(15.0), 0.7, 14), strict=True)
        ]
    sigma = inst.resolution_sigma
    for centre, strength in listed:
        lines += (
            strength / (np.sqrt(2 * np.pi) * sigma) * np.exp(-0.5 * ((wave - centre) / sigma) ** 2)
        )
    return continuum, lines * continuum


def sky(inst: Instrument) -> tuple[np.ndarray, np.ndarray]:
    """Sky continuum and sky emission lines, per pixel, in 1e-17 erg/s/cm²/Å."""
    return _sky(inst.name)


def sky_line_pixels(inst: Instrument) -> np.ndarray:
    continuum, lines = sky(inst)
    return lines > SKY_MASK_LEVEL * continuum


def observe(
    rng: np.random.Generator,
    inst: Instrument,
    model: np.ndarray,
    depth: np.ndarray,
    mask_sky: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy flux, ivar and mask for noiseless ``model`` (N, P).

    ``depth`` (N,) scales exposure (larger = less noise). Noise is Gaussian with the variance
    of sky plus source photons over throughput; ivar is its inverse. Bright sky-line pixels
    get a subtraction residual and, where ``mask_sky`` (N,) is true, are masked. Cosmic-ray
    hits are added and masked.
    """
    n, p = model.shape
    continuum, lines = sky(inst)
    per_pixel = inst.noise_scale * (0.8 / inst.widths)  # wider pixels collect more photons
    var = per_pixel * (continuum + lines + np.clip(model, 0, None)) / throughput(inst)
    var = var / depth[:, None]
    sigma = np.sqrt(var)
    flux = model + sigma * rng.standard_normal((n, p))
    residual = rng.normal(0.0, 0.04, (n, 1)) * lines
    flux += residual
    mask = np.zeros((n, p), dtype=bool)
    mask[mask_sky] = sky_line_pixels(inst)
    hits = rng.poisson(1.5, n)
    rows = np.repeat(np.arange(n), hits)
    cols = rng.integers(0, p - 2, rows.size)
    for span in range(2):
        flux[rows, cols + span] += (
            30.0 * sigma[rows, cols + span] * rng.uniform(0.5, 1.5, rows.size)
        )
        mask[rows, cols + span] = True
    return flux.astype(np.float32), (1.0 / var).astype(np.float32), mask
