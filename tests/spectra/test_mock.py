"""The mock survey: deterministic, physically grounded, anomalies that really differ."""

import numpy as np
import pytest

from labkit.errors import ParameterError
from labkit.spectra import mock_survey, preprocess
from labkit.spectra.grids import log_grid
from labkit.spectra.mock import ANOMALIES, sources
from labkit.spectra.mock import lines as L
from labkit.spectra.mock.instrument import instrument, observe, sky_line_pixels

DESI = instrument("desi")


def test_a_seed_gives_the_same_survey_and_another_seed_another(small_mock):
    again = mock_survey(120, anomaly_fraction=0.1, seed=7)
    for name in ("wave", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(again, name), getattr(small_mock, name))
    assert again.meta.pformat(max_lines=-1, max_width=-1) == small_mock.meta.pformat(
        max_lines=-1, max_width=-1
    )
    other = mock_survey(120, anomaly_fraction=0.1, seed=8)
    assert not np.array_equal(other.flux, small_mock.flux)
    assert list(other.meta["label"]) != list(small_mock.meta["label"])


def test_classes_truth_and_redshifts(small_mock):
    meta = small_mock.meta
    assert set(meta.colnames) >= {
        "targetid",
        "ra",
        "dec",
        "z",
        "spectype",
        "label",
        "is_anomaly",
        "subtype",
    }
    assert len(set(meta["targetid"])) == 120
    assert meta["is_anomaly"].sum() == 12
    assert sorted(meta["label"][meta["is_anomaly"]]) == sorted(ANOMALIES * 2)
    assert not meta["z"].mask.any()
    for label, spectype, (lo, hi) in (
        ("qso", "QSO", (0.3, 4.2)),
        ("galaxy_starforming", "GALAXY", (0.02, 1.55)),
        ("galaxy_passive", "GALAXY", (0.02, 1.05)),
        ("star", "STAR", (-0.002, 0.002)),
    ):
        rows = meta["label"] == label
        assert rows.sum() >= 10, label
        assert set(meta["spectype"][rows]) == {spectype}
        assert lo <= meta["z"][rows].min() and meta["z"][rows].max() <= hi
    assert set(meta["subtype"][meta["label"] == "star"]) <= set("AFGKM")
    assert small_mock.flux.dtype == np.float32 and small_mock.n_pixels == DESI.wave.size


def test_noise_is_drawn_from_ivar():
    rng = np.random.default_rng(0)
    model = np.tile(sources.planck(DESI.wave[None, :], np.array([6000.0]))[0] * 3, (400, 1))
    flux, ivar, mask = observe(rng, DESI, model, np.ones(400), np.ones(400, bool))
    pull = (flux - model) * np.sqrt(ivar)
    usable = ~mask & ~sky_line_pixels(DESI)[None, :]
    assert np.std(pull[usable]) == pytest.approx(1.0, abs=0.02)
    assert mask[:, sky_line_pixels(DESI)].all()  # bright sky lines are masked
    hits = mask & ~sky_line_pixels(DESI)[None, :]
    assert 1.0 < hits.sum() / 400 / 2 < 2.0  # cosmic-ray pairs, ~1.5 per spectrum


def line_flux(model, wave, z, centre, half=6.0):
    """Integrated flux of a line above a straight continuum from the sidebands."""
    c = centre * (1 + z)
    inside = np.abs(wave - c) < half * (1 + z)
    side = (np.abs(wave - c) > 2 * half * (1 + z)) & (np.abs(wave - c) < 3 * half * (1 + z))
    fit = np.polyfit(wave[side], model[side], 1)
    return np.sum((model[inside] - np.polyval(fit, wave[inside])) * np.gradient(wave)[inside])


def test_emission_lines_follow_atomic_physics_and_the_anomalies_break_it():
    rng = np.random.default_rng(1)
    z = np.full(6, 0.1)
    lsf = DESI.resolution_sigma
    normal = sources.star_forming_galaxy(rng, DESI.wave, z, lsf, ew_halpha=np.full(6, 150.0))
    broken = sources.star_forming_galaxy(
        rng,
        DESI.wave,
        z,
        lsf,
        ew_halpha=np.full(6, 150.0),
        ha_hb=np.full(6, 0.8),
        oiii_ratio=np.full(6, 0.5),
    )
    for row in range(6):
        ha, hb = (line_flux(normal[row], DESI.wave, 0.1, c) for c in (L.H_ALPHA, L.H_BETA))
        assert 2.7 < ha / hb < 7.0  # Case B 2.86, raised by dust (E(B-V)_gas up to 0.8)
        o3 = [line_flux(normal[row], DESI.wave, 0.1, c, half=4) for c in (L.OIII_5007, L.OIII_4959)]
        assert o3[0] / o3[1] == pytest.approx(L.OIII_RATIO, rel=0.1)
        ha, hb = (line_flux(broken[row], DESI.wave, 0.1, c) for c in (L.H_ALPHA, L.H_BETA))
        assert ha / hb < 1.2
        o3 = [line_flux(broken[row], DESI.wave, 0.1, c, half=4) for c in (L.OIII_5007, L.OIII_4959)]
        assert o3[0] / o3[1] < 0.7


def test_quasars_have_a_lyman_alpha_forest_and_bals_have_troughs():
    rng = np.random.default_rng(2)
    z = np.full(20, 2.8)
    lsf = DESI.resolution_sigma
    rest = DESI.wave / 3.8
    plain = sources.quasar(rng, DESI.wave, z, lsf)
    forest = (rest > 1050) & (rest < 1180)
    red = (rest > 1280) & (rest < 1350)
    power_law_ratio = (1115 / 1315) ** -1.5
    transmitted = plain[:, forest].mean(axis=1) / plain[:, red].mean(axis=1) / power_law_ratio
    assert 0.5 < np.median(transmitted) < 0.9  # mean transmission at z ≈ 2.6 is ~0.75
    troughs, _ = sources.bal_troughs(rng, DESI.wave, z)
    blue_of_civ = (rest > 1420) & (rest < 1540)
    assert np.all(troughs[:, blue_of_civ].min(axis=1) < 0.6)
    assert np.all(troughs[:, (rest > 1560) & (rest < 1700)] > 0.99)  # nothing redward of C IV


def test_passive_galaxies_have_a_strong_4000_break():
    rng = np.random.default_rng(3)
    z = np.full(10, 0.3)
    rest = DESI.wave / 1.3
    red, blue = (rest > 4050) & (rest < 4250), (rest > 3750) & (rest < 3950)
    for model, lo, hi in (
        (sources.passive_galaxy(rng, DESI.wave, z, 0.75), 1.5, 3.0),
        (sources.star_forming_galaxy(rng, DESI.wave, z, 0.75), 0.5, 1.45),
    ):
        d4000 = model[:, red].mean(axis=1) / model[:, blue].mean(axis=1)
        assert np.all((lo < d4000) & (d4000 < hi))


def test_anomalies_stand_out_from_the_normal_population():
    """A plain PCA fitted to everything reconstructs anomalies worse than normal spectra."""
    survey = mock_survey(500, anomaly_fraction=0.1, seed=3)
    rest = preprocess(survey, grid=log_grid(1200, 9000, 3e-4), cluster=False, progress=False)
    weight = np.where(rest.mask, 0.0, np.minimum(rest.ivar, 1e4))
    flux = np.where(rest.mask, 0.0, rest.flux)
    mean = (weight * flux).sum(0) / np.maximum(weight.sum(0), 1e-9)
    _, _, basis = np.linalg.svd(np.where(rest.mask, mean, flux) - mean, full_matrices=False)
    basis = basis[:10]
    chi2 = np.empty(len(rest))
    for i in range(len(rest)):
        root = np.sqrt(weight[i])
        design, target = basis.T * root[:, None], (flux[i] - mean) * root
        coeffs, *_ = np.linalg.lstsq(design, target, rcond=None)
        chi2[i] = np.sum((target - design @ coeffs) ** 2) / max((weight[i] > 0).sum(), 1)
    anomalous = np.asarray(rest.meta["is_anomaly"])
    auc = (chi2[anomalous][:, None] > chi2[~anomalous][None, :]).mean()
    assert auc > 0.62


def test_sdss_instrument_uses_the_sdss_log_grid():
    spectra = mock_survey(3, seed=1, instrument="sdss")
    exponents = np.log10(spectra.wave) / 1e-4
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-8)
    assert list(spectra.meta["fiberid"]) == [1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 2.5}, "n must be"),
        ({"n": 5, "anomaly_fraction": 1.5}, "anomaly_fraction"),
        ({"n": 5, "seed": -1}, "seed"),
        ({"n": 5, "instrument": "lamost"}, "instrument"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        mock_survey(**kwargs)
