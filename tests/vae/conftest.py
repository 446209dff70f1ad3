"""Small rest-frame spectra for VAE tests: a mock survey, preprocessed onto a coarse grid."""

from __future__ import annotations

import pytest

from labkit.spectra import Spectra, mock_survey, preprocess, rest_grid

# 900–9800 Å at 2e-3 dex: ~520 pixels, enough for lines to show, small enough to train fast
GRID = (900.0, 9800.0, 2e-3)


@pytest.fixture(scope="session")
def rest_spectra() -> Spectra:
    """240 preprocessed mock spectra (galaxies, quasars, stars, a few anomalies)."""
    observed = mock_survey(240, anomaly_fraction=0.02, seed=5)
    grid = rest_grid(*GRID[:2], GRID[2])
    return preprocess(observed, grid=grid, cluster=False, progress=False)
