"""Attach to Ray or Dask clusters through one interface."""

from labkit.clusters.base import Cluster
from labkit.clusters.session import (
    active_or_none,
    connect,
    current,
    disconnect,
    resolve_cluster,
)

__all__ = ["Cluster", "active_or_none", "connect", "current", "disconnect", "resolve_cluster"]
