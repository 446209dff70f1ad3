"""`labkit mock`: writes either layout, which reads back as the mock survey."""

import numpy as np
from click.testing import CliRunner

from labkit.cli import main
from labkit.spectra import mock_survey, read


def test_mock_writes_desi_coadds(tmp_path):
    result = CliRunner().invoke(
        main,
        ["mock", str(tmp_path / "out"), "--n", "30", "--anomaly-fraction", "0.2", "--seed", "4"],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 30 spectra (6 anomalies) in 1 desi file(s)" in result.output
    back = read(tmp_path / "out")
    expected = mock_survey(30, 0.2, 4)
    np.testing.assert_array_equal(back.flux, expected.flux)
    assert list(back.meta["label"]) == list(expected.meta["label"])


def test_mock_writes_sdss_spec_files(tmp_path):
    result = CliRunner().invoke(main, ["mock", str(tmp_path), "--n", "4", "--format", "sdss"])
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("spec-*.fits"))) == 4
    back = read(tmp_path, progress=False)
    np.testing.assert_array_equal(back.flux, mock_survey(4, instrument="sdss").flux)


def test_mock_refuses_bad_options(tmp_path):
    for args in (["--n", "0"], ["--format", "fits"], ["--anomaly-fraction", "2"], ["--seed", "-3"]):
        result = CliRunner().invoke(main, ["mock", str(tmp_path), *args])
        assert result.exit_code == 2 and "Invalid value" in result.output, args
    result = CliRunner().invoke(main, ["mock", "--help"])
    assert result.exit_code == 0 and "--anomaly-fraction" in result.output


def test_mock_will_not_mix_surveys_in_one_folder(tmp_path):
    first = CliRunner().invoke(main, ["mock", str(tmp_path), "--n", "6", "--format", "sdss"])
    assert first.exit_code == 0
    again = CliRunner().invoke(main, ["mock", str(tmp_path), "--n", "3", "--format", "sdss"])
    assert again.exit_code == 1
    assert "already holds 6 FITS file(s); pass overwrite=True" in again.output
    replaced = CliRunner().invoke(
        main, ["mock", str(tmp_path), "--n", "3", "--format", "sdss", "--overwrite"]
    )
    assert replaced.exit_code == 0 and len(read(tmp_path, progress=False)) == 3
    (tmp_path / "theirs.fits").write_bytes((tmp_path / "spec-10000-59000-0001.fits").read_bytes())
    from astropy.io import fits

    with fits.open(tmp_path / "theirs.fits", mode="update") as hdul:
        del hdul[0].header["LKFRAME"]
    refused = CliRunner().invoke(main, ["mock", str(tmp_path), "--n", "3", "--overwrite"])
    assert refused.exit_code == 1 and "labkit did not write (theirs.fits)" in refused.output
    assert (tmp_path / "theirs.fits").exists()
