"""Where runs are tracked: the tracking URI rule, and the off switch.

``LABKIT_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``, else a SQLite store ``mlflow.db``
beside the runs folder (``$LABKIT_RUNS_DIR`` or the working directory), whose artifacts go to
``mlartifacts/`` next to it. ``LABKIT_TRACKING=off`` turns tracking off.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

from labkit.errors import TrackingError

TRACKING_URI_ENV = "LABKIT_TRACKING_URI"
TRACKING_SWITCH_ENV = "LABKIT_TRACKING"
DEFAULT_DB = "mlflow.db"
UNSENT_DB = "mlflow-unsent.db"  # runs tracked here while their server could not be reached
_OFF = {"off", "0", "false", "no"}
# MLflow's own tracking stores; a database URI may name its driver ("postgresql+psycopg2")
SCHEMES = {"sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks"}
SERVER_SCHEMES = {"http", "https"}


def tracking_enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH_ENV, "on").strip().lower() not in _OFF


def tracking_uri(runs_dir: str | os.PathLike | None = None) -> str:
    """The tracking URI by the rule above; TrackingError for a scheme MLflow has no store for."""
    uri = os.environ.get(TRACKING_URI_ENV) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return sqlite_uri(runs_folder(runs_dir) / DEFAULT_DB)
    check_uri(uri)
    return uri


def check_uri(uri: str) -> None:
    scheme = scheme_of(uri)
    if scheme and scheme not in SCHEMES:
        raise TrackingError(
            f"tracking URI {uri!r} has the scheme {scheme!r}, which MLflow has no store for; "
            f"use one of {', '.join(sorted(SCHEMES))} (e.g. sqlite:///mlflow.db or "
            "http://host:5000)",
            uri=uri,
        )


def scheme_of(uri: str) -> str:
    """``uri``'s scheme without a driver suffix; "" for a plain path (MLflow's file store)."""
    if re.match(r"^[A-Za-z]:[\\/]", uri):  # a Windows drive, not a scheme
        return ""
    return urlparse(uri).scheme.split("+", 1)[0].lower()


def is_server(uri: str) -> bool:
    return scheme_of(uri) in SERVER_SCHEMES


def runs_folder(runs_dir: str | os.PathLike | None = None) -> Path:
    from labkit.runs.listing import runs_root  # the one home of the runs-folder rule

    return runs_root(runs_dir)


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, None for any other URI."""
    if scheme_of(uri) != "sqlite":
        return None
    return Path(uri.split(":///", 1)[1]) if ":///" in uri else None


def artifact_root(uri: str) -> str | None:
    """Where a local store's artifacts go (``mlartifacts/`` beside its database); None lets
    the store decide (a server, a file store)."""
    db = sqlite_path(uri)
    if db is None:
        return None
    stem = "mlartifacts-unsent" if db.name == UNSENT_DB else "mlartifacts"
    return (db.parent / stem).resolve().as_uri()
