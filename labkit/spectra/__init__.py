"""Survey spectra: the ``Spectra`` container, DESI/SDSS files, a mock survey, preprocessing.

from labkit.spectra import read, preprocess, mock_survey, write
spectra = read("coadds/", redshifts="redrock-*.fits")   # DESI or SDSS files, any mix
rest = preprocess(spectra)                              # on the active cluster, if any
store = preprocess(mock_source(1_600_000), out="mock.zarr")  # larger than memory: a store
"""

from labkit.spectra.container import Spectra, concatenate
from labkit.spectra.io import read, write
from labkit.spectra.mock import MockSource, mock_source, mock_survey
from labkit.spectra.preprocess import TRAINING_GRID, preprocess, preprocess_chunks, rest_grid
from labkit.spectra.store import SpectraStore, open_store

__all__ = [
    "TRAINING_GRID",
    "MockSource",
    "Spectra",
    "SpectraStore",
    "concatenate",
    "mock_source",
    "mock_survey",
    "open_store",
    "preprocess",
    "preprocess_chunks",
    "read",
    "rest_grid",
    "write",
]
