"""Survey spectra: the ``Spectra`` container, DESI/SDSS files, a mock survey, preprocessing.

from labkit.spectra import read, preprocess, mock_survey, write
spectra = read("coadds/", redshifts="redrock-*.fits")   # DESI or SDSS files, any mix
rest = preprocess(spectra)                              # on the active cluster, if any
"""

from labkit.spectra.container import Spectra, concatenate
from labkit.spectra.io import read, write
from labkit.spectra.mock import mock_survey
from labkit.spectra.preprocess import preprocess, preprocess_chunks, rest_grid

__all__ = [
    "Spectra",
    "concatenate",
    "mock_survey",
    "preprocess",
    "preprocess_chunks",
    "read",
    "rest_grid",
    "write",
]
