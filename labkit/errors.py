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
    """A Ray cluster wants a token that is missing, or refused the one given."""


class NotConnectedError(LabkitError):
    """No cluster is attached, or the cluster was closed."""


class UnsupportedOperation(LabkitError):
    """The operation does not apply to this cluster (e.g. scaling a remote one)."""


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
