"""preprocess: rest frame, flux-conserving resampling, ivar, normalisation, bad input."""

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from labkit.errors import MissingRedshiftError, ParameterError, SpectraError, SpectraWarning
from labkit.spectra import Spectra, preprocess, preprocess_chunks, read, rest_grid
from labkit.spectra.grids import log_grid
from labkit.spectra.preprocess import TRAINING_DLOG
from tests.spectra.conftest import LINE_REST


def gaussian_line_spectra(z, rest_centre=5000.0, wave=None, noise=None, seed=0):
    """Flat continuum 1 plus a line of rest sigma 2 Å at ``rest_centre``, observed at ``z``."""
    wave = np.arange(3600.0, 9800.0, 0.8) if wave is None else wave
    z = np.asarray(z, dtype=float)
    rest = wave[None, :] / (1 + z[:, None])
    flux = 1.0 + 20.0 * np.exp(-0.5 * ((rest - rest_centre) / 2.0) ** 2)
    ivar = np.full(flux.shape, 100.0)
    if noise is not None:
        flux = flux + np.random.default_rng(seed).normal(0, noise, flux.shape)
        ivar[:] = 1 / noise**2
    meta = Table({"targetid": np.arange(z.size), "z": z})
    return Spectra(wave, flux, ivar, meta=meta)


def centroid(spectra, row, lo, hi):
    window = (spectra.wave > lo) & (spectra.wave < hi)
    weights = np.clip(spectra.flux[row, window] - 1.0, 0, None)
    return float(np.sum(spectra.wave[window] * weights) / np.sum(weights))


def test_lines_land_at_their_rest_wavelength():
    z = np.array([0.0, 0.1, 0.37, 0.8, 0.93])
    rest = preprocess(gaussian_line_spectra(z), grid=log_grid(3000, 5500), progress=False)
    for row in range(z.size):
        assert centroid(rest, row, 4980, 5020) == pytest.approx(5000.0, abs=0.05)
    assert rest.frame == "rest" and rest.flux_unit == u.dimensionless_unscaled
    np.testing.assert_array_equal(rest.wave, log_grid(3000, 5500))


def test_mock_lines_land_at_their_rest_wavelengths(small_mock):
    galaxies = small_mock[
        (small_mock.meta["label"] == "galaxy_starforming") & (small_mock.meta["z"] < 0.45)
    ]
    rest = preprocess(galaxies, grid=log_grid(3500, 7000), progress=False)
    stack = np.nanmedian(np.where(rest.mask, np.nan, rest.flux), axis=0)
    for line in (6564.61, 5008.24, 4862.68):
        window = np.abs(rest.wave - line) < 15
        peak = rest.wave[window][np.nanargmax(stack[window])]
        assert peak == pytest.approx(line, abs=1.6)  # within a pixel (1.5 Å at Hα)


def test_fixture_lines_land_at_their_rest_wavelength(desi_archive):
    spectra = read(desi_archive.coadds, redshifts=desi_archive.redrock, progress=False)
    with pytest.warns(SpectraWarning, match="5 of 10 spectra have no usable pixel"):
        rest = preprocess(spectra, progress=False)
    pixel = LINE_REST * (10**TRAINING_DLOG - 1)  # the default grid's pixel width there
    for row in np.flatnonzero(desi_archive.live):
        window = np.abs(rest.wave - LINE_REST) < 2 * pixel
        assert rest.wave[window][np.argmax(rest.flux[row, window])] == pytest.approx(
            LINE_REST, abs=pixel / 2
        )
    assert rest.mask[~desi_archive.live].all()
    assert np.isnan(rest.meta["norm"][~desi_archive.live]).all()


def test_aligned_rebinning_doubles_ivar_exactly():
    wave = log_grid(4000, 6000)  # 1e-4 dex
    flux = np.full((1, wave.size), 7.0)
    spectra = Spectra(
        wave, flux, np.full((1, wave.size), 3.0), meta=Table({"targetid": [1], "z": [0.0]})
    )
    # coarse pixels of 2e-4 dex whose edges fall on fine edges ((k + 1/2) 1e-4 dex)
    coarse = 10 ** ((np.arange(36150, 37650, 2) + 0.5) * 1e-4)
    rest = preprocess(spectra, grid=coarse, progress=False)
    norm = rest.meta["norm"][0]
    assert norm == pytest.approx(7.0)
    np.testing.assert_allclose(rest.ivar[0], 2 * 3.0 * norm**2, rtol=1e-6)
    np.testing.assert_allclose(rest.flux[0], 1.0, rtol=1e-6)


def test_ivar_matches_the_scatter_of_resampled_noise():
    """Constant noise, pixels that do not line up: predicted variance = measured variance."""
    n = 3000
    spectra = gaussian_line_spectra(np.full(n, 0.123), rest_centre=1000.0, noise=0.5, seed=11)
    grid = log_grid(3500, 8000, dlog=1.7e-4)
    rest = preprocess(spectra, grid=grid, progress=False)
    norm = np.asarray(rest.meta["norm"])[:, None]
    raw = rest.flux * norm  # undo the per-spectrum normalisation, which is itself noisy
    predicted = 1.0 / (rest.ivar / norm**2)
    usable = ~rest.mask.any(axis=0)
    ratio = raw[:, usable].var(axis=0) / np.median(predicted[:, usable], axis=0)
    assert np.mean(ratio) == pytest.approx(1.0, abs=0.02)
    assert np.all(np.abs(ratio - 1) < 0.15)


def test_flux_density_is_conserved_and_normalised():
    wave = np.arange(3600.0, 9800.0, 0.8)
    z = np.array([0.0, 0.5, 2.0])
    spectra = Spectra(
        wave,
        np.full((3, wave.size), 4.0),
        np.ones((3, wave.size)),
        meta=Table({"targetid": [1, 2, 3], "z": z}),
    )
    rest = preprocess(spectra, progress=False)
    np.testing.assert_allclose(rest.meta["norm"], 4.0 * (1 + z))  # f_rest = f_obs (1 + z)
    for row in range(3):
        good = ~rest.mask[row]
        np.testing.assert_allclose(rest.flux[row, good], 1.0, rtol=1e-5)
        covered = rest.wave[good]
        pixel = 10**TRAINING_DLOG - 1  # relative width of one pixel of the default grid
        assert covered[0] == pytest.approx(3600 / (1 + z[row]), rel=pixel)
        assert covered[-1] == pytest.approx(9799.2 / (1 + z[row]), rel=pixel)


def test_every_row_is_kept_in_order_and_chunking_changes_nothing(small_mock):
    whole = preprocess(small_mock, progress=False)
    chunked = preprocess(small_mock, chunk_size=7, progress=False)
    assert len(whole) == len(small_mock)
    assert list(whole.meta["targetid"]) == list(small_mock.meta["targetid"])
    for name in ("flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    streamed = list(
        preprocess_chunks(
            (small_mock[i : i + 50] for i in range(0, 120, 50)), whole.wave, progress=False
        )
    )
    assert [len(s) for s in streamed] == [50, 50, 20]
    np.testing.assert_array_equal(np.vstack([s.flux for s in streamed]), whole.flux)


def test_the_size_of_work_blocks_changes_nothing(small_mock, monkeypatch):
    from labkit.spectra import resample

    monkeypatch.setattr(resample, "WORK_BYTES", 1)  # one row per block
    row_by_row = preprocess(small_mock, cluster=False, progress=False)
    monkeypatch.setattr(resample, "WORK_BYTES", 2**40)  # every row in one block
    at_once = preprocess(small_mock, cluster=False, progress=False)
    for name in ("flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(row_by_row, name), getattr(at_once, name))
    np.testing.assert_array_equal(row_by_row.meta["norm"], at_once.meta["norm"])


def test_missing_redshifts_are_named():
    spectra = gaussian_line_spectra([0.1, 0.2, 0.3, 0.4])
    spectra.meta["targetid"] = [11, 22, 33, 44]
    spectra.meta["z"].mask[[1, 3]] = True
    with pytest.raises(
        MissingRedshiftError, match="2 spectra have no redshift.*targetid 22, 44"
    ) as info:
        preprocess(spectra, progress=False)
    assert info.value.targetids == [22, 44]


def test_spectra_without_usable_pixels_need_no_redshift_and_stay_masked():
    spectra = gaussian_line_spectra([0.1, 0.2, 0.3])
    spectra.ivar[1] = 0
    spectra.mask[1] = True
    spectra.meta["z"].mask[1] = True
    with pytest.warns(SpectraWarning, match="1 of 3 spectra have no usable pixel"):
        rest = preprocess(spectra, progress=False)
    assert rest.mask[1].all() and not rest.mask[0].all() and not rest.mask[2].all()
    assert list(rest.meta["targetid"]) == [0, 1, 2]


def test_spectra_outside_the_grid_stay_masked_with_a_warning():
    spectra = gaussian_line_spectra([0.1, 3.0])
    with pytest.warns(SpectraWarning, match="1 of 2 spectra"):
        rest = preprocess(spectra, grid=log_grid(3000, 5000), progress=False)
    assert rest.mask[1].all() and rest.flux[1].sum() == 0


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (np.array([5000.0, 4000.0, 3000.0]), "increase"),
        (np.array([[1.0, 2.0]]), "1-D grid"),
        (np.linspace(1, 2, 5) * u.s, "must be a length"),
    ],
)
def test_bad_grids_are_refused(grid, message):
    with pytest.raises(ParameterError, match=message):
        preprocess(gaussian_line_spectra([0.1]), grid=grid, progress=False)


def test_a_grid_in_nanometres_is_taken():
    rest = preprocess(
        gaussian_line_spectra([0.2]), grid=log_grid(3000, 5500) / 10 * u.nm, progress=False
    )
    np.testing.assert_allclose(rest.wave, log_grid(3000, 5500))


def test_other_bad_input_is_refused():
    spectra = gaussian_line_spectra([0.1, -1.5])
    with pytest.raises(SpectraError, match="z <= -1 is impossible; targetid 1"):
        preprocess(spectra, progress=False)
    rest = preprocess(gaussian_line_spectra([0.1]), progress=False)
    with pytest.raises(SpectraError, match="already in the rest frame"):
        preprocess(rest, progress=False)
    with pytest.raises(ParameterError, match="needs a Spectra"):
        preprocess(np.zeros((2, 3)))
    with pytest.raises(ParameterError, match="chunk_size"):
        preprocess(gaussian_line_spectra([0.1]), chunk_size=0)
    with pytest.raises(ParameterError, match="needs a grid"):
        next(preprocess_chunks([gaussian_line_spectra([0.1])], None))


def test_rest_grid_is_pinned_to_multiples_of_its_step():
    grid = rest_grid(3000 * u.AA, 400 * u.nm)
    exponents = np.log10(grid) / TRAINING_DLOG  # the default step
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-8)
    assert grid[0] >= 3000 and grid[-1] <= 4000
