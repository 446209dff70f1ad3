"""Free ports for the processes labkit starts, clear of the range Ray gives its workers."""

from __future__ import annotations

import socket

# Ray hands out worker ports from this range (its defaults); our own ports stay clear of it.
RAY_WORKER_PORTS = range(10002, 20000)


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports on ``host``, none in Ray's worker-port range.

    All candidates are held open while choosing, so none repeats.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(n * 20):
            if len(ports) == n:
                break
            sock = socket.socket()
            sock.bind((host, 0))
            held.append(sock)
            port = sock.getsockname()[1]
            if port not in RAY_WORKER_PORTS:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(ports) < n:
        raise OSError(f"could not find {n} free ports on {host}")
    return ports
