"""Small rest-frame spectra for VAE tests: a mock survey, preprocessed onto a coarse grid."""

from __future__ import annotations

import numpy as np
import pytest

from labkit.spectra import Spectra


def synthetic(n: int = 240, seed: int = 0) -> Spectra:
    """Placeholder until labkit.spectra.mock_survey lands."""
    rng = np.random.default_rng(seed)
    wave = 10 ** np.arange(np.log10(3000), np.log10(9000), 0.002)
    p = wave.size
    x = np.log(wave / 3000) / np.log(3)
    kind = rng.integers(0, 3, n)
    slope = rng.normal(0, 0.3, n)
    amp = rng.uniform(0.5, 2, n)
    flux = 1 + slope[:, None] * (x - 0.5)
    for c, center in enumerate([4000, 5000, 6563]):
        flux += (kind == c)[:, None] * amp[:, None] * np.exp(-0.5 * ((wave - center) / 30) ** 2)
    ivar = np.full((n, p), 400.0, np.float32)
    flux = flux + rng.normal(0, 0.05, (n, p))
    mask = np.zeros((n, p), bool)
    mask[:, :5] = True
    meta = {"targetid": np.arange(n), "z": np.zeros(n), "spectype": np.full(n, "GALAXY")}
    return Spectra(wave, flux, ivar, mask, meta, frame="rest")


@pytest.fixture(scope="session")
def rest_spectra() -> Spectra:
    return synthetic()
