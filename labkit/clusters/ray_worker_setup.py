"""Run in every Ray worker process of a labkit driver (Ray's ``worker_process_setup_hook``).

PyTorch's gloo backend (DDP on CPUs) finds its own address by resolving the host name, which
on most Linux machines resolves to 127.0.0.1 or 127.0.1.1: each rank then tells the others to
connect to loopback, and a run across hosts fails with "Connection refused, remote=[127.0.0.1]".
Pinning gloo to the network interface that holds the address Ray knows the node by fixes that
without a setting per machine. A ``GLOO_SOCKET_IFNAME`` the user set is left alone.
"""

from __future__ import annotations

import os
import socket

HOOK = "labkit.clusters.ray_worker_setup.setup"


def interface_with(address: str) -> str | None:
    """The name of the network interface that holds IPv4 ``address``, if any."""
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addresses):
            return name
    return None


def setup() -> None:
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    import ray

    interface = interface_with(ray.util.get_node_ip_address())
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
