"""Attach to Ray or Dask clusters through one interface."""

from labkit.clusters.base import Cluster
from labkit.clusters.session import active_or_none, connect, current, disconnect
from labkit.clusters.spec import ClusterSpec, choose_cluster, using_cluster

__all__ = [
    "Cluster",
    "ClusterSpec",
    "active_or_none",
    "choose_cluster",
    "connect",
    "current",
    "disconnect",
    "using_cluster",
]
