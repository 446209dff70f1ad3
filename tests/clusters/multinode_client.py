"""The notebook side of the multi-host tests: run on a test-bed host, print one JSON line.

    python -m tests.clusters.multinode_client wait ADDRESS NODES [--token-file F]
    python -m tests.clusters.multinode_client map ADDRESS N [--token-file F] [--slow S]
        [--turns T] [--raw]
    python -m tests.clusters.multinode_client train ADDRESS [N] --token-file F [--epochs E]
    python -m tests.clusters.multinode_client batch ADDRESS N --bundle B [--token-file F]
    python -m tests.clusters.multinode_client refused ADDRESS [--token-file F]

``map`` prints ``mapping`` once the map is under way (a test can then take a host down),
then the figures. Dask's TLS files come from Dask's configuration (its environment variables).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

WAIT_S = 240  # a node joining a busy 2-core machine can take a minute or more


def _square(x: int, slow: float = 0.0) -> tuple[int, str]:
    """x², and the host it ran on (its address: every host of the bed has our hostname)."""
    from labkit.clusters.where import this_host

    if slow:
        time.sleep(slow)
    return x * x, this_host()


def _connect(args: argparse.Namespace):
    import labkit

    return labkit.connect(args.address, timeout=30, token_file=args.token_file)


def wait(args: argparse.Namespace) -> dict:
    from labkit.errors import ConnectError

    deadline = time.monotonic() + WAIT_S
    while True:  # the head may still be starting
        try:
            cluster = _connect(args)
            break
        except ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    while len(cluster.workers()) < args.count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(cluster.workers())} of {args.count} nodes after {WAIT_S} s")
        time.sleep(0.2)
    return {"workers": cluster.workers()}


def map_(args: argparse.Namespace) -> dict:
    """labkit's map (``turns`` times; with ``--raw`` also Ray's own idiom, one task per item)."""
    import functools

    cluster = _connect(args)
    hosts = sorted({w["host"] for w in cluster.workers()})
    fn = functools.partial(_square, slow=args.slow)
    print("mapping", flush=True)
    seconds, raw_seconds = [], []
    for _ in range(args.turns):
        started = time.perf_counter()
        results = cluster.map(fn, range(args.count), progress=False)
        seconds.append(time.perf_counter() - started)
        if args.raw:
            raw_seconds.append(_raw_ray(fn, args.count))
    return {
        "hosts": hosts,
        "ordered": [r[0] for r in results] == [x * x for x in range(args.count)],
        "ran_on": sorted({r[1] for r in results}),
        "n": len(results),
        "seconds": seconds[0],
        "best_s": min(seconds),
        "raw_best_s": min(raw_seconds) if raw_seconds else None,
    }


def _raw_ray(fn, count: int) -> float:
    import ray

    remote = ray.remote(fn)
    started = time.perf_counter()
    ray.get([remote.remote(x) for x in range(count)])
    return time.perf_counter() - started


def train(args: argparse.Namespace) -> dict:
    """A 2-worker Ray Train (DDP over gloo) run of a small VAE; this process is the driver.

    Prints ``epoch N`` as each epoch's record arrives (a test can take a host down then)."""
    import tempfile

    from labkit.spectra import mock_survey, preprocess, rest_grid
    from labkit.vae import TrainConfig
    from labkit.vae import train as train_vae

    _connect(args)
    spectra = preprocess(
        mock_survey(args.count or 256, anomaly_fraction=0.0, seed=3),
        grid=rest_grid(900.0, 9800.0, 2e-3),
        cluster=False,
        progress=False,
    )
    config = TrainConfig(
        latent_dim=4, hidden=(32, 16), batch_size=32, epochs=args.epochs, kl_warmup=1,
        num_workers=2,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        result = train_vae(
            spectra,
            config,
            "ray",
            checkpoint_dir=folder,
            progress=False,
            callback=lambda record: print(f"epoch {record['epoch']}", flush=True),
        )
    return {"epochs": len(result.history), "val_loss": result.history[-1]["val_loss"]}


def batch(args: argparse.Namespace) -> dict:
    """``labkit.batch`` of a bundle over ``scale`` = 1..N on the cluster at the address."""
    import labkit
    from labkit.runs import batch as run_batch

    labkit.connect(args.address, timeout=30, token_file=args.token_file)
    result = run_batch(args.bundle, {"scale": list(range(1, args.count + 1))}, progress=False)
    return {"runs": result.runs}


def refused(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    try:
        _connect(args)
    except Exception as exc:
        return {
            "error": type(exc).__name__,
            "message": str(exc),
            "seconds": time.perf_counter() - started,
        }
    return {"error": None, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["wait", "map", "train", "batch", "refused"])
    parser.add_argument("address")
    parser.add_argument("count", nargs="?", type=int, default=0)
    parser.add_argument("--token-file")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also time Ray's raw idiom")
    parser.add_argument("--bundle", help="the bundle a batch runs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a training runs")
    args = parser.parse_args()
    scenarios = {"wait": wait, "map": map_, "train": train, "batch": batch, "refused": refused}
    scenario = scenarios[args.scenario]
    print(json.dumps(scenario(args)), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
