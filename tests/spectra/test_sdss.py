"""SDSS spec-lite files: alignment on the global log-λ grid, masks, meta, round trips."""

import numpy as np
import pytest
from astropy.io import fits

from labkit.errors import SpectraWarning
from labkit.spectra import mock_survey, read, write
from tests.spectra.archive import write_sdss_spec


@pytest.fixture
def sdss_files(tmp_path):
    """Three spec-lite files starting at different log λ, as SDSS fibres do."""
    paths, rng = [], np.random.default_rng(3)
    for k, (first, size) in enumerate(((35800, 3800), (35650, 4000), (35900, 3600))):
        loglam = (first + np.arange(size)) * 1e-4
        flux = np.full(size, 10.0 + k) + rng.normal(0, 0.1, size)
        ivar = np.full(size, 100.0)
        and_mask = np.zeros(size, np.int32)
        and_mask[100:103] = 1 << 23  # BRIGHTSKY
        ivar[200] = 0.0
        paths.append(
            write_sdss_spec(
                tmp_path / f"spec-7{k}00-57000-{k + 1:04d}.fits",
                loglam,
                flux,
                ivar,
                and_mask,
                plate=7000 + 100 * k,
                mjd=57000,
                fiberid=k + 1,
                z=0.1 * (k + 1),
                cls=["GALAXY", "QSO", "STAR"][k],
            )
        )
    return paths


def test_files_with_different_starts_share_the_sdss_grid(sdss_files):
    spectra = read(sdss_files, progress=False)
    exponents = np.log10(spectra.wave) / 1e-4
    np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-6)
    assert round(exponents[0]) == 35650 and spectra.n_pixels == 4000  # the union of the three
    offsets = {0: 150, 1: 0, 2: 250}
    sizes = {0: 3800, 1: 4000, 2: 3600}
    for row, offset in offsets.items():
        usable = ~spectra.mask[row]
        assert not usable[:offset].any() and not usable[offset + sizes[row] :].any()
        np.testing.assert_allclose(
            spectra.flux[row, offset + 300 : offset + 400], 10.0 + row, atol=0.5
        )
        assert spectra.mask[row, offset + 100 : offset + 103].all()  # and_mask bits
        assert spectra.mask[row, offset + 200] and spectra.ivar[row, offset + 200] == 0  # ivar 0


def test_meta_comes_from_the_spall_row(sdss_files):
    meta = read(sdss_files, progress=False).meta
    assert list(meta["spectype"]) == ["GALAXY", "QSO", "STAR"]
    np.testing.assert_allclose(meta["z"], [0.1, 0.2, 0.3], rtol=1e-6)
    assert list(meta["targetid"]) == [
        7000 * 10**9 + 57000 * 10**4 + 1,
        7100 * 10**9 + 57000 * 10**4 + 2,
        7200 * 10**9 + 57000 * 10**4 + 3,
    ]
    assert list(meta["plate"]) == [7000, 7100, 7200] and set(meta["survey"]) == {"sdss"}


def test_round_trip_through_the_sdss_layout(tmp_path):
    spectra = mock_survey(12, anomaly_fraction=0.25, seed=5, instrument="sdss")
    paths = write(spectra, tmp_path / "sdss", format="sdss")
    assert len(paths) == 12 and paths[0].name == "spec-10000-59005-0001.fits"
    back = read(tmp_path / "sdss", progress=False)
    for name in ("wave", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(spectra, name), err_msg=name)
    for column in (
        "targetid",
        "spectype",
        "label",
        "is_anomaly",
        "subtype",
        "plate",
        "mjd",
        "fiberid",
    ):
        assert list(back.meta[column]) == list(spectra.meta[column]), column
    np.testing.assert_allclose(
        back.meta["z"], spectra.meta["z"], rtol=1e-6, atol=1e-9
    )  # Z is float32
    with fits.open(paths[0]) as hdul:
        assert [h.name for h in hdul][:3] == ["PRIMARY", "COADD", "SPALL"]
        assert {c.name for c in hdul["COADD"].columns} >= {
            "flux",
            "loglam",
            "ivar",
            "and_mask",
            "or_mask",
            "wdisp",
            "sky",
            "model",
        }


def test_spectra_without_plate_ids_keep_their_targetid(tmp_path, small_mock):
    few = small_mock[:3]
    few.meta["targetid"][1] = -5  # negative ids exist in DESI; SDSS names need a fibre
    back = read(write(few, tmp_path, format="sdss"), progress=False)
    assert sorted(back.meta["targetid"]) == sorted(few.meta["targetid"])


def test_desi_and_sdss_files_read_together_onto_one_grid(tmp_path, sdss_files, desi_archive):
    with pytest.warns(SpectraWarning, match="resampled"):
        both = read([desi_archive.coadds[0], *sdss_files], progress=False)
    assert len(both) == 8
    assert np.allclose(np.diff(np.log10(both.wave)), 1e-4)
    assert list(both.meta["survey"]) == ["desi"] * 5 + ["sdss"] * 3
    row = 5 + 1  # the second SDSS file: flat at 11
    assert np.allclose(both.flux[row][~both.mask[row]], 11.0, atol=0.5)
