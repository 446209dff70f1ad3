"""Children lost to gRPC's fork handlers, as a Ray process forks them, with and without labkit's
Ray process settings (``labkit.clusters.ray_processes``), measured in one run.

Each side is a fresh Python with a live gRPC server and channel (as the Ray Client proxy on a
head has) that starts ``true`` N times the way Ray starts its processes: ``subprocess.Popen``
with a ``preexec_fn``, so by fork and exec, its output to a file. A child that dies before the
exec exits non-zero.
``children_died_ratio``: the share of children that died, labkit's environment over the raw
default (target 0); ``fork_time_ratio``: the time per start, labkit over raw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from report import print_table, write_results  # noqa: E402

from labkit.clusters.ray_processes import RAY_PROCESS_SETTINGS, ray_process_env  # noqa: E402

FORKS = textwrap.dedent(
    """
    import concurrent.futures, json, subprocess, sys, tempfile, time
    import grpc

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=5)
    except grpc.FutureTimeoutError:
        pass  # nothing serves the channel: it still keeps gRPC's threads busy
    died, said, began = 0, "", time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a child's output goes to a file, as in Ray
        for _ in range(int(sys.argv[1])):
            log.seek(0), log.truncate()
            if subprocess.run(["true"], stdout=log, stderr=log, preexec_fn=lambda: None).returncode:
                died += 1
                said = said or (log.seek(0), log.read().strip()[:200])[1]
    print(json.dumps({"died": died, "seconds": time.perf_counter() - began, "said": said}))
    """
)


def forks(n: int, env: dict[str, str]) -> dict:
    """Start ``true`` ``n`` times from a Python with live gRPC, in ``env``."""
    done = subprocess.run(
        [sys.executable, "-c", FORKS, str(n)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1000 starts a side, not 4000")
    args = parser.parse_args()
    n = 1000 if args.quick else 4000
    raw_env = {k: v for k, v in os.environ.items() if k not in RAY_PROCESS_SETTINGS}
    raw, ours = forks(n, raw_env), forks(n, ray_process_env(raw_env))
    if raw["said"]:
        print(f"a child that died (raw) said: {raw['said']}")
    raw_died, ours_died = raw["died"] / n, ours["died"] / n
    write_results(
        "grpc_fork",
        args.quick,
        {
            "starts": n,
            "children_died_raw": raw_died,
            "children_died_labkit": ours_died,
            "children_died_ratio": ours_died / raw_died if raw_died else float("nan"),
            "fork_time_ratio": ours["seconds"] / raw["seconds"],
        },
    )
    rows = [("ms per start", 1e3 * ours["seconds"] / n, 1e3 * raw["seconds"] / n, "~1")]
    if raw_died:
        rows.append(("children died (%)", 100 * ours_died, 100 * raw_died, "0"))
    print_table("Ray-style fork and exec beside a live gRPC server", rows)


if __name__ == "__main__":
    main()
