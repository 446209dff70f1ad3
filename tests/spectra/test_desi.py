"""DESI coadds: the real archive files, fixtures that mirror them, arm merging, round trips."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from labkit.spectra import read, write
from labkit.spectra.desi import merge_arms
from tests.spectra.archive import arm_waves
from tests.spectra.conftest import real_desi_files


def layout(path):
    """What must match between real and fixture files: HDU order, names, types, columns."""
    with fits.open(path) as hdul:
        hdus = []
        for hdu in hdul:
            kind = type(hdu).__name__
            if isinstance(hdu, fits.BinTableHDU):
                detail = [(c.name, c.format) for c in hdu.columns]
            elif hdu.data is not None:
                detail = (
                    str(hdu.data.dtype.newbyteorder("=")),
                    hdu.data.ndim,
                    hdu.header.get("BUNIT"),
                    hdu.header.get("BZERO"),
                )
            else:
                detail = None
            hdus.append((hdu.name, kind, detail))
        return hdus


def test_fixtures_mirror_the_real_archive_layout(desi_archive):
    real = layout(real_desi_files()[0])
    ours = layout(desi_archive.coadds[0])
    assert [h[:2] for h in ours] == [h[:2] for h in real]
    assert ours == real
    with fits.open(real_desi_files()[0]) as a, fits.open(desi_archive.coadds[0]) as b:
        for name in ("B_WAVELENGTH", "R_WAVELENGTH", "Z_WAVELENGTH"):
            np.testing.assert_array_equal(a[name].data, b[name].data)
        for name in ("B_FLUX", "B_RESOLUTION", "Z_MASK"):
            assert a[name].data.shape == b[name].data.shape  # both hold 5 fibres
        for key in ("SPGRP", "TILEID", "SPECTRO", "PETAL"):
            assert key in b[0].header


def test_reads_the_real_archive_files_as_they_come():
    spectra = read(real_desi_files(), progress=False)
    assert len(spectra) == 10 and spectra.n_pixels == 7781
    assert spectra.wave[0] == 3600.0 and spectra.wave[-1] == pytest.approx(9824.0)
    np.testing.assert_allclose(np.diff(spectra.wave), 0.8, atol=1e-6)
    ids = np.asarray(spectra.meta["targetid"])
    assert (ids < 0).sum() == 5 and ids.dtype == np.int64
    dead = spectra.mask.all(axis=1)
    assert list(dead) == [True, True, True, True, False, True, True, False, True, False]
    assert np.all(spectra.ivar[dead] == 0)
    assert spectra.meta["z"].mask.all()  # coadds carry no redshifts
    assert "10 × 7781 px" in repr(spectra)


def test_real_overlaps_are_combined_by_inverse_variance():
    path = real_desi_files()[0]
    spectra = read(path)
    with fits.open(path) as hdul:
        b_wave, r_wave = hdul["B_WAVELENGTH"].data, hdul["R_WAVELENGTH"].data
        row = 4  # a live fibre
        b = np.flatnonzero(np.isclose(b_wave, 5780.0, atol=1e-6))[0]
        r = np.flatnonzero(np.isclose(r_wave, 5780.0, atol=1e-6))[0]
        fb, ib = hdul["B_FLUX"].data[row, b], hdul["B_IVAR"].data[row, b]
        fr, ir = hdul["R_FLUX"].data[row, r], hdul["R_IVAR"].data[row, r]
    at = np.flatnonzero(np.isclose(spectra.wave, 5780.0, atol=1e-6))
    assert at.size == 1  # one merged pixel, not two
    assert spectra.flux[row, at[0]] == pytest.approx((fb * ib + fr * ir) / (ib + ir), rel=1e-6)
    assert spectra.ivar[row, at[0]] == pytest.approx(ib + ir, rel=1e-6)


def test_real_files_take_redshifts_joined_by_targetid():
    ids = read(real_desi_files()).meta["targetid"]
    table = Table(
        {"TARGETID": list(ids[::-1]) + [12345], "Z": np.arange(11) * 0.1, "SPECTYPE": ["QSO"] * 11}
    )
    spectra = read(real_desi_files(), redshifts=table, progress=False)
    np.testing.assert_allclose(spectra.meta["z"], np.arange(10)[::-1] * 0.1)
    assert set(spectra.meta["spectype"]) == {"QSO"}


def test_fixture_arms_merge_onto_one_grid(desi_archive):
    spectra = read(desi_archive.coadds[0])
    waves = arm_waves()
    assert spectra.n_pixels == sum(w.size for w in waves.values()) - 51 - 126
    assert np.all(np.diff(spectra.wave) > 0.79)
    with fits.open(desi_archive.coadds[0]) as hdul:
        flagged = hdul["R_MASK"].data[1] != 0
        r_wave = hdul["R_WAVELENGTH"].data
    for w in r_wave[flagged]:
        at = np.argmin(np.abs(spectra.wave - w))
        assert spectra.mask[1, at] and spectra.ivar[1, at] == 0
    assert list(spectra.meta["targetid"]) == list(desi_archive.targetid[:5])
    assert list(spectra.meta["fiberstatus"] > 0) == list(~desi_archive.live[:5])


def test_merge_uses_the_good_arm_where_the_other_is_masked():
    wave_b, wave_r = np.array([1.0, 2.0, 3.0]), np.array([2.0 + 1e-10, 3.0, 4.0])
    flux_b, flux_r = np.array([[1.0, 2.0, 3.0]]), np.array([[10.0, 20.0, 30.0]])
    ivar_b, ivar_r = np.array([[1.0, 1.0, 3.0]]), np.array([[1.0, 1.0, 1.0]])
    good_b, good_r = np.array([[True, False, True]]), np.array([[True, True, True]])
    wave, flux, ivar, mask = merge_arms(
        [(wave_b, flux_b, ivar_b, good_b), (wave_r, flux_r, ivar_r, good_r)]
    )
    np.testing.assert_array_equal(wave, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(flux[0], [1.0, 10.0, (9.0 + 20.0) / 4.0, 30.0])
    np.testing.assert_allclose(ivar[0], [1.0, 1.0, 4.0, 1.0])
    assert not mask.any()


def test_redshifts_come_from_a_redrock_file_or_glob(desi_archive):
    by_file = read(desi_archive.coadds, redshifts=desi_archive.redrock, progress=False)
    by_glob = read(
        str(desi_archive.folder / "coadd-*.fits"),
        redshifts=str(desi_archive.folder / "redrock-*.fits"),
    )
    for spectra in (by_file, by_glob):
        np.testing.assert_allclose(spectra.meta["z"], desi_archive.z)
        assert list(spectra.meta["spectype"][desi_archive.live]) == ["GALAXY"] * int(
            desi_archive.live.sum()
        )


def test_round_trip_through_the_desi_layout(tmp_path, small_mock):
    paths = write(small_mock, tmp_path / "mock.fits")
    back = read(paths)
    for name in ("wave", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(small_mock, name), err_msg=name)
    for column in ("targetid", "z", "spectype", "label", "is_anomaly", "subtype"):
        assert list(back.meta[column]) == list(small_mock.meta[column]), column
    np.testing.assert_allclose(back.meta["ra"], small_mock.meta["ra"])
    with fits.open(paths[0]) as hdul:
        names = [h.name for h in hdul]
        assert names[:2] == ["PRIMARY", "FIBERMAP"] and {"REDSHIFTS", "TRUTH"} <= set(names)
        assert hdul["B_MASK"].data.dtype == np.uint32 and hdul["B_MASK"].header["BZERO"] == 2**31
        assert hdul["B_FLUX"].header["BUNIT"] == "10**-17 erg/(s cm2 Angstrom)"
        assert hdul["B_WAVELENGTH"].data.dtype.newbyteorder("=") == np.float64


def test_round_trip_of_a_grid_that_is_not_desis(tmp_path):
    from labkit.spectra import Spectra

    wave = np.geomspace(1000.0, 2000.0, 300)
    rng = np.random.default_rng(1)
    spectra = Spectra(wave, rng.normal(size=(4, 300)), rng.uniform(1, 2, (4, 300)))
    back = read(write(spectra, tmp_path / "odd.fits"))
    np.testing.assert_array_equal(back.wave, wave)
    np.testing.assert_array_equal(back.flux, spectra.flux)
    np.testing.assert_allclose(back.ivar, spectra.ivar, rtol=1e-7)
