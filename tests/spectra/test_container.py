"""The Spectra container: invariants, units at the edges, indexing, concatenation."""

import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.table import Table

from labkit.errors import SpectraError, SpectraWarning
from labkit.spectra import Spectra, concatenate
from labkit.spectra.container import FLUX_UNIT
from labkit.spectra.grids import log_grid


def make(n=3, p=50, start=4000.0, wave=None, **meta):
    wave = np.linspace(start, start + p - 1, p) if wave is None else wave
    flux = np.arange(n * wave.size, dtype=np.float32).reshape(n, wave.size)
    ivar = np.ones_like(flux)
    table = Table({"targetid": np.arange(n) + 100, **meta})
    return Spectra(wave, flux, ivar, meta=table)


def test_bad_values_become_masked_pixels_without_touching_the_callers_arrays():
    wave = np.linspace(4000, 4009, 10)
    flux = np.ones((2, 10), np.float32)
    flux[0, 1], flux[1, 2] = np.nan, np.inf
    ivar = np.full((2, 10), 4.0, np.float32)
    ivar[0, 5], ivar[1, 6] = 0.0, np.nan
    mask = np.zeros((2, 10), bool)
    mask[1, 9] = True
    s = Spectra(wave, flux, ivar, mask)
    assert s.flux.dtype == np.float32 and s.ivar.dtype == np.float32 and s.mask.dtype == bool
    assert set(zip(*np.nonzero(s.mask), strict=True)) == {(0, 1), (1, 2), (0, 5), (1, 6), (1, 9)}
    assert np.all(s.ivar[s.mask] == 0) and np.all(s.ivar[~s.mask] == 4.0)
    assert np.all(np.isfinite(s.flux)) and s.flux[0, 1] == 0
    assert np.isnan(flux[0, 1]) and np.isnan(ivar[1, 6])  # the caller's arrays are untouched
    assert list(s.meta["targetid"]) == [0, 1] and s.meta["z"].mask.all()


def test_units_meet_the_user_at_the_edges():
    wave_nm = np.linspace(400, 500, 11) * u.nm
    f_nu = np.full((1, 11), 1e-27) * u.erg / u.s / u.cm**2 / u.Hz
    s = Spectra(wave_nm, f_nu, np.ones((1, 11)))
    assert s.wave[0] == pytest.approx(4000.0) and s.wave[-1] == pytest.approx(5000.0)
    expected = (1e-27 * 2.99792458e18 / s.wave**2) / 1e-17  # f_λ = f_ν c / λ², in 1e-17 units
    np.testing.assert_allclose(s.flux[0], expected, rtol=1e-5)
    assert s.wavelength.unit == u.AA and s.flux_density.unit == FLUX_UNIT
    assert s.flux_density[0, 0].to_value(u.erg / u.s / u.cm**2 / u.AA) == pytest.approx(
        expected[0] * 1e-17, rel=1e-5
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"wave": np.array([3.0, 2.0, 1.0])}, "increase"),
        ({"wave": np.linspace(1, 2, 3) * u.s}, "must be a length"),
        (
            {"flux": np.ones((2, 4)), "ivar": np.ones((2, 4))},
            "4 pixels per spectrum but wave has 3",
        ),
        ({"ivar": np.ones((2, 2))}, "ivar has shape"),
        ({"ivar": -np.ones((2, 3))}, "negative in rows 0, 1"),
        ({"meta": Table({"targetid": [1]})}, "meta has 1 rows but there are 2"),
        ({"meta": Table({"id": [1, 2]})}, "needs a 'targetid' column"),
    ],
)
def test_bad_input_is_refused_with_the_reason(kwargs, message):
    args = {"wave": np.array([1.0, 2.0, 3.0]), "flux": np.ones((2, 3)), "ivar": np.ones((2, 3))}
    args.update(kwargs)
    with pytest.raises(SpectraError, match=message):
        Spectra(**args)


def test_indexing_gives_spectra_with_their_meta():
    s = make(5)
    assert len(s[1]) == 1 and s[1].meta["targetid"][0] == 101
    assert s[-1].meta["targetid"][0] == 104
    assert list(s[1:3].meta["targetid"]) == [101, 102]
    assert list(s[np.array([4, 0])].meta["targetid"]) == [104, 100]
    picked = s[s.meta["targetid"] > 102]
    assert len(picked) == 2 and np.array_equal(picked.flux, s.flux[3:])
    with pytest.raises(IndexError):
        s[5]
    with pytest.raises(SpectraError, match="by row only"):
        s[0, 1]


def test_concatenate_keeps_rows_in_order_and_joins_meta():
    a = make(2, spectype=["QSO", "STAR"])
    b = make(3, survey=["sdss"] * 3)
    both = Spectra.concatenate([a, b])
    assert len(both) == 5 and np.array_equal(both.flux, np.vstack([a.flux, b.flux]))
    assert list(both.meta["spectype"]) == ["QSO", "STAR", "", "", ""]
    assert list(both.meta["survey"].mask) == [True, True, False, False, False]


def test_grids_that_are_slices_of_one_log_grid_are_padded_not_resampled():
    grid = log_grid(3800, 4200)
    a = Spectra(grid[:100], np.ones((1, 100)), np.ones((1, 100)))
    b = Spectra(grid[40:160], np.full((1, 120), 2.0), np.ones((1, 120)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = concatenate([a, b])
    np.testing.assert_array_equal(both.wave, grid[:160])
    assert both.mask[0, 100:].all() and not both.mask[0, :100].any()
    assert both.mask[1, :40].all() and np.all(both.flux[1, 40:] == 2.0)


def test_grids_that_do_not_line_up_are_resampled_with_a_warning():
    linear = make(1, p=400, start=4000.0)
    linear.flux[:] = 3.0
    grid = log_grid(4100, 4600)
    log = Spectra(grid, np.full((1, grid.size), 5.0), np.ones((1, grid.size)))
    with pytest.warns(SpectraWarning, match="resampled"):
        both = concatenate([linear, log])
    steps = np.diff(np.log10(both.wave))
    assert np.allclose(steps, 1e-4)
    assert np.allclose(both.flux[0][~both.mask[0]], 3.0) and np.allclose(
        both.flux[1][~both.mask[1]], 5.0
    )


def test_concatenate_refuses_what_cannot_be_stacked():
    with pytest.raises(SpectraError, match="no spectra"):
        concatenate([])
    rest = make(1)
    rest.frame = "rest"
    with pytest.raises(SpectraError, match="observed-frame and rest-frame"):
        concatenate([make(1), rest])
    with pytest.raises(SpectraError, match="only concatenate Spectra"):
        concatenate([make(1), "x"])


def test_repr_is_one_compact_line():
    s = make(3, z=[0.5, np.nan, 1.0], spectype=["QSO", "QSO", "STAR"])
    text = repr(s)
    assert "\n" not in text
    assert "3 × 50 px" in text and "4000.0–4049.0 Å" in text and "z known 2/3" in text
    assert "QSO 2" in text
