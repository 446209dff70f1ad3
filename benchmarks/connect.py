"""labkit.connect and Cluster.map against the raw Ray and Dask idioms, measured in one run.

connect_ratio_*: time to a ready local cluster, each attempt in a fresh Python process
(imports excluded), median over repeats. map_ratio_*: wall time of mapping a trivial
function over 1000 items on the same warm cluster, labkit (with its progress bar) against
`ray.get([f.remote(x) ...])` / `client.gather(client.map(f, ...))`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

CONNECT_SNIPPETS = {
    "raw_ray": ("import ray", "ray.init()", "ray.shutdown()"),
    "labkit_ray": ("import labkit, ray", "labkit.connect(backend='ray')", "labkit.disconnect()"),
    "raw_dask": (
        "from distributed import Client, LocalCluster",
        "cluster = LocalCluster(); client = Client(cluster)",
        "client.close(); cluster.close()",
    ),
    "labkit_dask": (
        "import labkit, distributed",
        "labkit.connect(backend='dask')",
        "labkit.disconnect()",
    ),
}


def time_connect(name: str) -> float:
    setup, ready, teardown = CONNECT_SNIPPETS[name]
    script = textwrap.dedent(
        f"""
        import time
        {setup}
        def main():
            start = time.perf_counter()
            {ready}
            elapsed = time.perf_counter() - start
            {teardown}
            print("ELAPSED", elapsed)
        if __name__ == "__main__":
            main()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return float(out.split("ELAPSED")[-1])


def trivial(x):
    return x + 1


def measure_map(backend: str, n_items: int, repeats: int) -> dict[str, float]:
    import psutil

    import labkit

    cluster = labkit.connect(backend=backend)
    items = list(range(n_items))
    time.sleep(2)  # let the idle cluster settle before reading its memory
    me = psutil.Process()
    rss = sum(p.memory_info().rss for p in me.children(recursive=True))
    if backend == "ray":
        import ray

        remote_trivial = ray.remote(trivial)

        def raw():
            return ray.get([remote_trivial.remote(x) for x in items])
    else:
        client = cluster.client

        def raw():
            return client.gather(client.map(trivial, items))

    def ours():
        return cluster.map(trivial, items, progress=True, desc=f"{backend} map")

    assert raw() == ours() == [x + 1 for x in items]  # warm both paths
    timings = {"raw": [], "labkit": []}
    for _ in range(repeats):
        for name, run in (("raw", raw), ("labkit", ours)):
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)
    labkit.disconnect()
    return {
        "raw": statistics.median(timings["raw"]),
        "labkit": statistics.median(timings["labkit"]),
        "idle_rss_bytes": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a few minutes)")
    args = parser.parse_args()
    connect_repeats = 2 if args.quick else 5
    map_repeats = 3 if args.quick else 10
    n_items = 1000

    connect = {name: [] for name in CONNECT_SNIPPETS}
    for _ in range(connect_repeats):  # interleaved, so drift hits both sides alike
        for name in connect:
            connect[name].append(time_connect(name))
    connect = {name: statistics.median(values) for name, values in connect.items()}
    maps = {backend: measure_map(backend, n_items, map_repeats) for backend in ("ray", "dask")}

    metrics = {
        "connect_ratio_ray": connect["labkit_ray"] / connect["raw_ray"],
        "connect_ratio_dask": connect["labkit_dask"] / connect["raw_dask"],
        "map_ratio_ray": maps["ray"]["labkit"] / maps["ray"]["raw"],
        "map_ratio_dask": maps["dask"]["labkit"] / maps["dask"]["raw"],
    }
    for backend in ("ray", "dask"):
        metrics[f"connect_s_labkit_{backend}"] = connect[f"labkit_{backend}"]
        metrics[f"connect_s_raw_{backend}"] = connect[f"raw_{backend}"]
        metrics[f"map_s_labkit_{backend}"] = maps[backend]["labkit"]
        metrics[f"map_s_raw_{backend}"] = maps[backend]["raw"]
        metrics[f"map_items_per_s_labkit_{backend}"] = n_items / maps[backend]["labkit"]
        metrics[f"map_items_per_s_raw_{backend}"] = n_items / maps[backend]["raw"]
        metrics[f"idle_rss_bytes_{backend}"] = maps[backend]["idle_rss_bytes"]
    metrics = {key: round(value, 4) for key, value in metrics.items()}
    write_results("connect", args.quick, metrics)
    print_table(
        f"connect and map, {n_items} trivial items (seconds; median)",
        [
            ("connect ray", connect["labkit_ray"], connect["raw_ray"], "<= 1.15"),
            ("connect dask", connect["labkit_dask"], connect["raw_dask"], "<= 1.15"),
            ("map ray", maps["ray"]["labkit"], maps["ray"]["raw"], "<= 0.5"),
            ("map dask", maps["dask"]["labkit"], maps["dask"]["raw"], "<= 0.5"),
        ],
    )


if __name__ == "__main__":
    main()
