"""One family of exceptions for everything a user can get wrong.

Front doors (magics, CLI, widgets, REST) turn a ``LabkitError`` into a one-line message;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class LabkitError(Exception):
    """Base class: a mistake or a condition the user can act on."""


class ConnectError(LabkitError):
    """A cluster could not be reached or attached; names the address and backend."""

    def __init__(self, message: str, *, address: str | None = None, backend: str | None = None):
        super().__init__(message)
        self.address = address
        self.backend = backend


class AuthError(ConnectError):
    """A Ray cluster wants a token that is missing, or refused the one given; a Dask
    scheduler wants TLS certificates the client lacks, or refused those given."""


class VersionMismatchError(ConnectError):
    """The cluster's hosts run package versions that break this notebook's tasks."""


class SlurmError(ConnectError):
    """SLURM is not here, refused a request (its own message is named), or a job's worker
    never connected (the job id and the last lines of its output are named)."""


class NotConnectedError(LabkitError):
    """No cluster is attached, or the cluster was closed."""


class UnsupportedOperationError(LabkitError):
    """The operation does not apply to this cluster (e.g. scaling a remote one)."""


UnsupportedOperation = UnsupportedOperationError  # the name before 0.x; kept for old code


class RegistryError(LabkitError):
    """A named cluster is unknown, or the registry file cannot be read."""


class MapItemError(LabkitError):
    """``Cluster.map`` failed on one item; the original exception is ``__cause__``."""

    def __init__(self, index: int, item: Any, error: BaseException, worker_traceback: str = ""):
        shown = repr(item)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"map failed on item {index} ({shown}): {type(error).__name__}: {error}")
        self.index = index
        self.item = item
        self.error = error
        self.worker_traceback = worker_traceback


class ClusterTaskError(LabkitError):
    """The cluster lost a piece of ``Cluster.map`` work (a worker died, or could not run it)."""

    def __init__(self, message: str, first_item: int, last_item: int):
        super().__init__(message)
        self.first_item = first_item
        self.last_item = last_item


class ParameterError(LabkitError):
    """A value given by the user has the wrong name, type or range."""


class TrainingDataError(LabkitError):
    """Spectra cannot be used for training: empty, not on one rest-frame grid, NaN/inf values."""


class CheckpointError(LabkitError):
    """A model checkpoint is missing, unreadable, or made for another grid or architecture."""


class TrainingError(LabkitError):
    """Training failed on a cluster worker; the worker's message is part of this one."""


class BundleError(LabkitError):
    """A notebook, bundle, run or batch directory is missing or not what it claims to be."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class BundleParameterError(ParameterError):
    """A run was given a parameter the bundle does not take, or a value of the wrong type."""

    def __init__(self, message: str, *, name: str, value: Any = None):
        super().__init__(message)
        self.name = name
        self.value = value


class ClusterNotFoundError(LabkitError):
    """The Jupyter server knows no cluster with this id (REST: 404)."""

    def __init__(self, cluster_id: str):
        super().__init__(f"no cluster with id {cluster_id!r}")
        self.cluster_id = cluster_id


class SpectraError(LabkitError):
    """Spectra are malformed, or a step cannot use them (e.g. mismatched shapes or grids)."""


class SpectraFileError(SpectraError):
    """A spectra file is missing, corrupt, truncated, of unknown layout, or holds NaN/inf data."""

    def __init__(self, message: str, *, path: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class MissingRedshiftError(SpectraError):
    """A step that needs redshifts met spectra without one; ``targetids`` names them."""

    def __init__(self, message: str, *, targetids: list[int]):
        super().__init__(message)
        self.targetids = targetids


class StoreError(SpectraError):
    """A spectra store is missing, incomplete, corrupt, of another format version, or refused."""

    def __init__(self, message: str, *, path: str, chunk: int | None = None):
        where = f"{path}" if chunk is None else f"{path}, chunk {chunk}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.chunk = chunk


class StoreMismatchError(StoreError):
    """A store exists at that path, written from other inputs or onto another grid."""


class SpectraWarning(UserWarning):
    """Something in spectra the user should know about, that does not stop the step."""


class BundleWarning(UserWarning):
    """Something in a frozen bundle the user should know about, that does not stop freezing."""


class TrackingError(LabkitError):
    """A tracking URI labkit cannot use (an unknown scheme), or a store to sync that is not
    there; names the URI."""

    def __init__(self, message: str, *, uri: str | None = None):
        super().__init__(message)
        self.uri = uri


class TrackingWarning(UserWarning):
    """Tracking could not reach its server: the run goes on and its record is kept here."""


class RunFailedError(LabkitError):
    """A run, batch or verification finished but did not come out as it should."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class VectorIndexError(LabkitError):
    """A spectrum index (Milvus collection) refused an operation; names the URI and collection."""

    def __init__(self, message: str, *, uri: str | None = None, collection: str | None = None):
        super().__init__(message)
        self.uri = uri
        self.collection = collection


class IndexUnreachableError(ConnectError, VectorIndexError):
    """Nothing answers at the index URI within the timeout, or the index file is locked."""

    def __init__(self, message: str, *, uri: str, collection: str | None = None):
        ConnectError.__init__(self, message, address=uri, backend="milvus")
        self.uri = uri
        self.collection = collection


class DimensionError(VectorIndexError):
    """Vectors whose length is not the collection's dimension; ``expected`` and ``got``."""

    def __init__(self, message: str, *, expected: int, got: int, **where: str | None):
        super().__init__(message, **where)
        self.expected = expected
        self.got = got


class FilterError(VectorIndexError):
    """A filter expression the index cannot parse or apply; ``expression`` is the filter."""

    def __init__(self, message: str, *, expression: str, **where: str | None):
        super().__init__(message, **where)
        self.expression = expression


class UnknownIdError(VectorIndexError):
    """Ids the index does not hold; ``ids`` lists them."""

    def __init__(self, message: str, *, ids: list[int], **where: str | None):
        super().__init__(message, **where)
        self.ids = ids


class TemplateError(LabkitError):
    """``labkit new``: an unknown template (``known`` lists the names) or a path in the way."""

    def __init__(self, message: str, *, name: str | None = None, known: list[str] | None = None):
        super().__init__(message)
        self.name = name
        self.known = known or []


class ClusterSpecError(ParameterError, RegistryError):
    """A ``cluster=`` / ``on=`` argument that names no cluster (see ``clusters.spec``)."""
