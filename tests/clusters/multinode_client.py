"""The notebook side of the multi-host tests: run on a test-bed host, print one JSON line.

    python -m tests.clusters.multinode_client wait ADDRESS NODES [--token-file F] [--wait-s S]
    python -m tests.clusters.multinode_client map ADDRESS N [--token-file F] [--slow S]
        [--turns T] [--raw]
    python -m tests.clusters.multinode_client train ADDRESS [N] --token-file F [--epochs E]
        [--show-workers]
    python -m tests.clusters.multinode_client batch ADDRESS N --bundle B [--token-file F]
        [--hold-scale K --hold-file F]
    python -m tests.clusters.multinode_client refused ADDRESS [--token-file F]
    python -m tests.clusters.multinode_client fetch URL [--jupyter-token T] [--data JSON]

``map`` prints ``mapping`` once the map is under way (a test can then take a host down),
then the figures. Dask's TLS files come from Dask's configuration (its environment variables).
``--timeout`` is labkit.connect's; with ``--report-error`` a labkit error is the JSON line
(its type, message and the wall-clock time it was raised) instead of a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

from labkit.errors import LabkitError

WAIT_S = 240  # a node joining a busy 2-core machine can take a minute or more


def _square(x: int, slow: float = 0.0) -> tuple[int, str]:
    """x², and the host it ran on (its address: every host of the bed has our hostname)."""
    from labkit.clusters.where import this_host

    if slow:
        time.sleep(slow)
    return x * x, this_host()


def _connect(args: argparse.Namespace):
    import labkit

    return labkit.connect(args.address, timeout=args.timeout, token_file=args.token_file)


def wait(args: argparse.Namespace) -> dict:
    from labkit.errors import ConnectError

    deadline = time.monotonic() + args.wait_s
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
            found = len(cluster.workers())
            raise TimeoutError(f"{found} of {args.count} nodes after {args.wait_s:g} s")
        time.sleep(0.2)
    return {"workers": cluster.workers()}


def map_(args: argparse.Namespace) -> dict:
    """labkit's map (``turns`` times; with ``--raw`` also Ray's own idiom, one task per item)."""
    cluster = _connect(args)
    hosts = sorted({w["host"] for w in cluster.workers()})
    fn = functools.partial(_square, slow=args.slow)
    print("mapping", flush=True)
    seconds, raw_seconds = [], []
    for _ in range(args.turns):
        started = time.perf_counter()
        results = cluster.map(fn, range(args.count), progress=False)
        seconds.append(time.perf_counter() - started)
        finished_at = time.time()
        if args.raw:
            raw_seconds.append(_raw_ray(args.count, args.slow))
    return {
        "hosts": hosts,
        "ordered": [r[0] for r in results] == [x * x for x in range(args.count)],
        "ran_on": sorted({r[1] for r in results}),
        "n": len(results),
        "seconds": seconds[0],
        "finished_at": finished_at,  # wall clock, comparable across the bed's hosts
        "best_s": min(seconds),
        "raw_best_s": min(raw_seconds) if raw_seconds else None,
    }


def _raw_ray(count: int, slow: float) -> float:
    """Ray's own idiom for the same work: one task per item, then ``ray.get`` of them all."""
    import ray

    remote = ray.remote(_square)
    started = time.perf_counter()
    ray.get([remote.remote(x, slow) for x in range(count)])
    return time.perf_counter() - started


def train(args: argparse.Namespace) -> dict:
    """A 2-worker Ray Train (DDP over gloo) run of a small VAE; this process is the driver.

    Prints ``epoch N`` as each epoch's record arrives (a test can take a host down then);
    with ``--show-workers``, after the first epoch also ``workers [{"host", "pid"}, ...]``:
    where the Ray Train workers run, as Ray's state API tells it."""
    import tempfile

    from labkit.spectra import mock_survey, preprocess, rest_grid
    from labkit.vae import TrainConfig
    from labkit.vae import train as train_vae

    cluster = _connect(args)  # the cluster itself: "ray" would mean a new local one
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
            cluster,
            checkpoint_dir=folder,
            progress=False,
            callback=functools.partial(_epoch_done, show_workers=args.show_workers),
        )
    return {"epochs": len(result.history), "val_loss": result.history[-1]["val_loss"]}


def _epoch_done(record: dict, show_workers: bool) -> None:
    print(f"epoch {record['epoch']}", flush=True)
    if show_workers and record["epoch"] == 1:
        print(f"workers {json.dumps(_train_workers())}", flush=True)


def _train_workers() -> list[dict]:
    """The live Ray Train worker actors: the address of the node each runs on, and its PID."""
    import ray
    from ray.util.state import list_actors

    hosts = {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}
    return [
        {"host": hosts[actor.node_id], "pid": actor.pid}
        for actor in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
        if actor.class_name.endswith("TrainWorker")
    ]


def batch(args: argparse.Namespace) -> dict:
    """``labkit.batch`` of a bundle over ``scale`` = 1..N on the cluster at the address; with
    ``--hold-file``, the run of ``scale`` = ``--hold-scale`` is held busy (``tests/runs``'
    notebook) until the test takes its worker's host down."""
    from labkit.runs import batch as run_batch

    _connect(args)
    grid: dict = {"scale": list(range(1, args.count + 1))}
    if args.hold_file:
        grid |= {"hold_scale": [args.hold_scale], "hold_file": [args.hold_file]}
    result = run_batch(args.bundle, grid, progress=False)
    return {"runs": result.runs, "folder": str(result.path)}


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


def fetch(args: argparse.Namespace) -> dict:
    """One HTTP GET (a POST of ``--data``), redirects not followed: its status, Location and
    the start of its body."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    headers = {"Authorization": f"token {args.jupyter_token}"} if args.jupyter_token else {}
    data = args.data.encode() if args.data is not None else None
    request = urllib.request.Request(args.address, data=data, headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            status, location, body = response.status, None, response.read()
    except urllib.error.HTTPError as exc:
        status, location, body = exc.code, exc.headers.get("Location"), exc.read()
    seconds = time.perf_counter() - started
    text = body.decode(errors="replace")[:4000]
    return {"status": status, "location": location, "body": text, "seconds": seconds}


SCENARIOS = {
    "wait": wait, "map": map_, "train": train, "batch": batch, "refused": refused, "fetch": fetch,
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("address")
    parser.add_argument("count", nargs="?", type=int, default=0)
    parser.add_argument("--token-file")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="also time Ray's raw idiom")
    parser.add_argument("--bundle", help="the bundle a batch runs")
    parser.add_argument("--hold-scale", type=int, default=1, help="the batch run held busy")
    parser.add_argument("--hold-file", help="where the held run writes its worker's PID")
    parser.add_argument("--epochs", type=int, default=2, help="epochs a training runs")
    parser.add_argument("--show-workers", action="store_true", help="where training runs")
    parser.add_argument("--jupyter-token", help="what fetch sends as Jupyter's token")
    parser.add_argument("--data", help="a JSON body fetch posts")
    parser.add_argument("--timeout", type=float, default=30.0, help="labkit.connect's timeout")
    parser.add_argument("--wait-s", type=float, default=WAIT_S, help="how long wait waits")
    parser.add_argument("--report-error", action="store_true", help="a labkit error as JSON")
    args = parser.parse_args()
    scenario = SCENARIOS[args.scenario]
    try:
        figures = scenario(args)
    except LabkitError as exc:
        if not args.report_error:
            raise
        figures = {"error": type(exc).__name__, "message": str(exc), "at": time.time()}
    print(json.dumps(figures), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
