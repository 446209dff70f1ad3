"""read/write front door: sources, layouts, and every bad input named clearly."""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from labkit.errors import ParameterError, SpectraError, SpectraFileError, SpectraWarning
from labkit.spectra import Spectra, read, write
from labkit.spectra.formats import (
    SpectraFormat,
    format_names,
    register_format,
    unregister_format,
)
from tests.spectra.archive import write_desi_coadd
from tests.spectra.conftest import desi_content


@pytest.fixture
def folder(tmp_path, desi_archive):
    for path in desi_archive.coadds:
        shutil.copy(path, tmp_path)
    return tmp_path


def test_a_folder_a_glob_and_a_list_read_the_same(folder, desi_archive):
    by_folder = read(folder, progress=False)
    by_glob = read(str(folder / "coadd-*.fits"), progress=False)
    by_list = read([folder / "coadd-0-169.fits", str(folder / "coadd-1-169.fits")], progress=False)
    for spectra in (by_glob, by_list):
        np.testing.assert_array_equal(spectra.flux, by_folder.flux)
        assert list(spectra.meta["targetid"]) == list(desi_archive.targetid)
    reverse = read([folder / "coadd-1-169.fits", folder / "coadd-0-169.fits"], progress=False)
    assert list(reverse.meta["targetid"]) == list(desi_archive.targetid[5:]) + list(
        desi_archive.targetid[:5]
    )


def test_corrupt_file_is_named(folder):
    bad = folder / "coadd-9-corrupt.fits"
    bad.write_bytes(b"SIMPLE  = this is not really FITS" * 100)
    with pytest.raises(
        SpectraFileError, match="coadd-9-corrupt.fits: corrupt or unreadable FITS"
    ) as info:
        read(folder)
    assert info.value.path == str(bad)


def test_truncated_file_is_named(folder):
    data = (folder / "coadd-1-169.fits").read_bytes()
    cut = folder / "coadd-2-truncated.fits"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(SpectraFileError, match="coadd-2-truncated.fits: truncated FITS file"):
        read([folder / "coadd-0-169.fits", cut])
    cut.write_bytes(data[:300_000])  # cut inside a data unit labkit reads
    with pytest.raises(SpectraFileError, match="coadd-2-truncated.fits"):
        read(cut)


def test_unknown_layout_is_named_with_its_hdus(tmp_path):
    path = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="SCI")]).writeto(path)
    with pytest.raises(SpectraFileError, match=r"image.fits: unknown layout.*PRIMARY, SCI"):
        read(path)


def test_nan_flux_in_pixels_the_file_calls_good_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    flux, ivar, mask = desi_content(rng, 2, [], np.array([0.2, 0.3]))
    flux["R"][1, 50] = np.nan
    path = write_desi_coadd(tmp_path / "coadd-nan.fits", np.array([1, 2]), flux, ivar, mask)
    with pytest.raises(
        SpectraFileError, match=r"coadd-nan.fits: arm R has NaN, inf or negative .* rows 1"
    ):
        read(path)
    flux["R"][1, 50] = 1.0
    flux["B"][0, 7], ivar["B"][0, 7] = np.inf, 0.0  # flagged by ivar 0: just a masked pixel
    spectra = read(write_desi_coadd(tmp_path / "coadd-ok.fits", np.array([1, 2]), flux, ivar, mask))
    assert spectra.mask[0, 7] and spectra.flux[0, 7] == 0 and spectra.ivar[0, 7] == 0


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpectraFileError, match="nope.fits: no such file"):
        read(tmp_path / "nope.fits")


def test_skip_warns_with_every_skipped_file_and_reads_the_rest(folder, desi_archive):
    (folder / "coadd-5-bad.fits").write_bytes(b"junk")
    missing = folder / "gone.fits"
    with pytest.warns(
        SpectraWarning, match=r"skipped 2 unreadable file\(s\):.*coadd-5-bad.fits.*gone.fits"
    ) as record:
        spectra = read(
            [
                folder / "coadd-0-169.fits",
                folder / "coadd-5-bad.fits",
                missing,
                folder / "coadd-1-169.fits",
            ],
            on_error="skip",
            progress=False,
        )
    assert len(record) == 1
    assert list(spectra.meta["targetid"]) == list(desi_archive.targetid)
    with pytest.raises(SpectraError, match="none of the 1 file"), pytest.warns(SpectraWarning):
        read(folder / "coadd-5-bad.fits", on_error="skip")


@pytest.mark.parametrize(
    ("source", "kwargs", "error", "message"),
    [
        ("{tmp}/nothing-*.fits", {}, SpectraError, "no file matches"),
        ("{tmp}", {}, SpectraError, "no FITS files"),
        ([], {}, SpectraError, "no files given"),
        (42, {}, ParameterError, "takes a path, folder, glob"),
        ("{tmp}/x.fits", {"on_error": "ignore"}, ParameterError, "on_error must be one of"),
    ],
)
def test_bad_sources_are_refused(tmp_path, source, kwargs, error, message):
    if isinstance(source, str):
        source = source.format(tmp=tmp_path)
    with pytest.raises(error, match=message):
        read(source, **kwargs)


def test_bad_redshift_tables_are_refused(desi_archive, tmp_path):
    ids = desi_archive.targetid
    clash = Table({"TARGETID": [ids[1], ids[1]], "Z": [0.5, 0.7]})
    with pytest.raises(SpectraError, match=f"different Z for the same TARGETID: {ids[1]}"):
        read(desi_archive.coadds[0], redshifts=clash)
    same = Table({"TARGETID": [ids[1], ids[1]], "Z": [0.5, 0.5]})  # repeated, but consistent
    assert read(desi_archive.coadds[0], redshifts=same).meta["z"][1] == 0.5
    with pytest.raises(SpectraError, match="has no Z column"):
        read(desi_archive.coadds[0], redshifts=Table({"TARGETID": ids, "REDSHIFT": ids * 0.0}))
    with pytest.raises(SpectraFileError, match="zbest.fits: no such redshift file"):
        read(desi_archive.coadds[0], redshifts=tmp_path / "zbest.fits")
    with pytest.raises(SpectraError, match="redshifts must be a redrock/zbest file"):
        read(desi_archive.coadds[0], redshifts=3.5)


def test_write_refuses_to_overwrite_and_bad_formats(tmp_path, small_mock):
    write(small_mock[:2], tmp_path / "a.fits")
    with pytest.raises(SpectraFileError, match="a.fits: already exists; pass overwrite=True"):
        write(small_mock[:2], tmp_path / "a.fits")
    write(small_mock[:3], tmp_path / "a.fits", overwrite=True)
    assert len(read(tmp_path / "a.fits")) == 3
    with pytest.raises(ParameterError, match="format must be one of"):
        write(small_mock, tmp_path / "b", format="fits")
    with pytest.raises(SpectraError, match="no spectra to write"):
        write(small_mock[:0], tmp_path / "c.fits")
    with pytest.raises(ParameterError, match="needs a Spectra"):
        write(np.zeros(3), tmp_path / "d.fits")


def test_a_folder_gets_coadds_of_500_spectra(tmp_path):
    from labkit.spectra import mock_survey

    spectra = mock_survey(501, anomaly_fraction=0.0, seed=2)
    paths = write(spectra, tmp_path / "survey")
    assert [p.name for p in paths] == ["coadd-labkit-0000.fits", "coadd-labkit-0001.fits"]
    assert len(read(paths[1])) == 1


def _toy_read(path, hdul):
    """A toy format: the primary HDU holds flux; an ImageHDU WAVE holds the grid."""
    flux = np.asarray(hdul[0].data, dtype=np.float32)
    n = len(flux)
    meta = Table({"targetid": np.arange(n), "z": np.zeros(n), "spectype": ["?"] * n})
    return Spectra(hdul["WAVE"].data, flux, np.ones_like(flux), meta=meta)


def _toy_write(spectra, path, overwrite):
    primary = fits.PrimaryHDU(spectra.flux)
    primary.header["TOYSPEC"] = True
    fits.HDUList([primary, fits.ImageHDU(spectra.wave, name="WAVE")]).writeto(
        path, overwrite=overwrite
    )
    return [path]


@pytest.fixture
def toy_format():
    fmt = register_format(
        SpectraFormat(
            name="toy",
            identify=lambda hdul: "TOYSPEC" in hdul[0].header,
            read=_toy_read,
            write=_toy_write,
            looks_for="a toy file (TOYSPEC)",
        )
    )
    yield fmt
    unregister_format("toy")


def test_a_registered_format_is_written_and_read_like_the_built_in_ones(
    tmp_path, small_mock, toy_format
):
    assert format_names() == ("desi", "sdss", "toy")
    (path,) = write(small_mock[:4], tmp_path / "toy.fits", format="toy")
    back = read(path, progress=False)
    np.testing.assert_array_equal(back.flux, small_mock.flux[:4])
    np.testing.assert_array_equal(back.wave, small_mock.wave)
    image = tmp_path / "image.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((3, 3)), name="SCI")]).writeto(image)
    with pytest.raises(SpectraFileError, match=r"nor a toy file \(TOYSPEC\)"):
        read(image)


def test_an_unknown_format_lists_the_registered_ones(tmp_path, small_mock, toy_format):
    with pytest.raises(ParameterError, match=r"\('desi', 'sdss', 'toy'\), got 'fits'"):
        write(small_mock, tmp_path / "b", format="fits")
    with pytest.raises(ParameterError, match="registered already"):
        register_format(toy_format)
