"""labkit: a Jupyter-native research workbench on Ray and Dask."""

from labkit.clusters import Cluster, connect, current, disconnect
from labkit.errors import LabkitError
from labkit.runs.records import record
from labkit.version import __version__

__all__ = [
    "__version__",
    "Cluster",
    "LabkitError",
    "connect",
    "current",
    "disconnect",
    "load_ipython_extension",
    "record",
]


def load_ipython_extension(ipython) -> None:
    """``%load_ext labkit``: register the ``%labkit`` magics."""
    from labkit.magics import register

    register(ipython)


def unload_ipython_extension(ipython) -> None:
    from labkit.magics import unregister

    unregister(ipython)
