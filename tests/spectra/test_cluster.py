"""Reading and preprocessing give the same result in-process, on Ray and on Dask."""

import numpy as np
import pytest

from labkit.errors import SpectraFileError, SpectraWarning
from labkit.spectra import preprocess, preprocess_chunks, read


def test_preprocess_on_the_cluster_matches_in_process(cluster, small_mock):
    here = preprocess(small_mock, cluster=False, progress=False)
    there = preprocess(small_mock, chunk_size=16, progress=False)  # the active cluster
    for name in ("wave", "flux", "ivar", "mask"):
        np.testing.assert_array_equal(getattr(there, name), getattr(here, name), err_msg=name)
    np.testing.assert_array_equal(there.meta["norm"], here.meta["norm"])
    assert list(there.meta["targetid"]) == list(small_mock.meta["targetid"])
    # streamed chunks finish in any order on a cluster and come back in input order
    parts = (small_mock[i : i + 7] for i in range(0, len(small_mock), 7))
    streamed = list(preprocess_chunks(parts, here.wave, progress=False))
    assert [len(p) for p in streamed] == [
        len(small_mock[i : i + 7]) for i in range(0, len(small_mock), 7)
    ]
    np.testing.assert_array_equal(np.vstack([p.flux for p in streamed]), here.flux)


def test_reading_on_the_cluster_matches_in_process(cluster, desi_archive, tmp_path):
    here = read(desi_archive.coadds, redshifts=desi_archive.redrock, cluster=False)
    there = read(desi_archive.coadds, redshifts=desi_archive.redrock, progress=False)
    np.testing.assert_array_equal(there.flux, here.flux)
    np.testing.assert_array_equal(there.meta["z"], here.meta["z"])
    broken = tmp_path / "coadd-broken.fits"
    broken.write_bytes(b"not fits")
    with pytest.raises(SpectraFileError, match="coadd-broken.fits: corrupt"):
        read([*desi_archive.coadds, broken], progress=False)
    with pytest.warns(SpectraWarning, match="coadd-broken.fits"):
        skipped = read([broken, *desi_archive.coadds], on_error="skip", progress=False)
    assert list(skipped.meta["targetid"]) == list(desi_archive.targetid)
