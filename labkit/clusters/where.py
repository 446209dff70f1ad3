"""Which host this code runs on, named as the cluster names it."""

from __future__ import annotations

import socket
import sys


def this_host() -> str:
    """The address of this worker's host as ``Cluster.workers()`` lists it; outside a
    cluster worker, the hostname. (Hosts may share a hostname, e.g. containers or network
    namespaces of one machine; their addresses differ.)"""
    distributed = sys.modules.get("distributed")  # a Dask worker has it imported (and
    if distributed is not None:  # importing it costs a SLURM batch task ~0.5 s per start)
        try:
            return distributed.get_worker().address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
        except ValueError:  # not in a Dask worker
            pass
    ray = sys.modules.get("ray")  # a Ray worker has it imported; nobody else needs to
    if ray is not None and ray.is_initialized():
        return ray.util.get_node_ip_address()
    return socket.gethostname()
