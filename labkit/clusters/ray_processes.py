"""The environment of every ``ray start`` labkit runs: the sidebar's head, SLURM nodes, tests.

Ray starts its processes by fork and exec, with a ``preexec_fn`` (so never by vfork). gRPC's
fork handlers, on by default in grpcio, restart gRPC's event-engine threads in the forked child;
when a restarted poller finds its epoll descriptor already closed for the exec, the child
aborts before it runs ("epoll_wait error: Bad file descriptor"). The Ray Client proxy on a head
forks one server per attaching client while its gRPC is busy, so now and then a client's
server died at start ("Starting Ray client server failed"). `benchmarks/grpc_fork.py` measures
the race alone: 1 to 4 % of such children die with the handlers on (grpcio 1.85), none of
4000 with them off.

``PYTHONFAULTHANDLER`` writes the Python stacks of a process that crashes into its own log,
which is how this was found.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RAY_PROCESS_SETTINGS = {"GRPC_ENABLE_FORK_SUPPORT": "0", "PYTHONFAULTHANDLER": "1"}


def ray_process_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) with labkit's Ray process settings;
    a value the user set is kept."""
    env = dict(os.environ if base is None else base)
    for name, value in RAY_PROCESS_SETTINGS.items():
        env.setdefault(name, value)
    return env
