"""The Jupyter server side of the multi-host tests: labkit's ClusterManager on a host.

    python -m tests.clusters.multinode_server BACKEND BIND_HOST WORKERS OUT_FILE

Starts one managed cluster with ``ClusterManager.bind_host`` set to this host's address (as a
sidebar Start would) and writes its description (the REST record) to ``OUT_FILE`` every
half second, until SIGTERM: then the manager stops every process it started, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from labkit.server.manager import ClusterManager


async def serve(backend: str, host: str, workers: int, out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="labkit-server-"))
    manager = ClusterManager(
        bind_host=host,
        registry_file=str(work / "registry.json"),
        work_root=str(work),
        list_kernel_clusters=False,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        described = await manager.start_cluster(backend, workers)
        while not stop.is_set():
            described = await manager.get_cluster(described.id)
            record = dataclasses.asdict(described)
            kept = manager._clusters[described.id]
            record["tls"], record["token_file"] = kept.tls, kept.token_file
            partial = out.with_suffix(".part")
            partial.write_text(json.dumps(record))
            os.replace(partial, out)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await manager.shutdown()


def main() -> None:
    backend, host, workers, out = sys.argv[1:5]
    asyncio.run(serve(backend, host, int(workers), Path(out)))


if __name__ == "__main__":
    main()
