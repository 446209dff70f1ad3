"""Survey scale: every stage through an on-disk store, at two sizes, memory and speed per stage.

Stages (each on a local 2-CPU Ray cluster, the demo's defaults): preprocess a mock survey into
a store (workers generate and write their chunks), train one epoch from the store, score every
spectrum, build the milvus-lite index. Each size runs in a fresh process, so peak RSS is that
size's own; worker processes' RSS is sampled while the stages run.

Metrics (keys fixed by the issue):
- ``scale_rss_ratio``: max peak RSS (driver or any worker) at the large size / at the small
  one (target <= 1.2);
- ``scale_throughput_ratio``: lowest over stages of spectra/s at the large size / small size
  (target >= 0.85);
- ``score_cost_ratio``: scoring seconds per spectrum / training seconds per spectrum per epoch
  (target <= 5);
- ``speedup_2_workers_store``: preprocessing into a store in-process / on the 2-worker cluster,
  measured in turns, with the cluster up (target >= 1.7); beside it, plain Ray tasks doing the
  same chunk work (the raw tool) for the ratio labkit / raw;
- with ``--full``: ``full_wall_s`` and ``full_peak_rss_gb`` of ``labkit demo --spectra 1600000
  --epochs 2`` end to end (``--full-only``: just that, into ``results/scale-full.json``).

Sizes: 20k and 200k (``--quick``: 5k and 20k). The script removes what it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

GRID = (900.0, 9800.0, 5.5e-4)
STAGES = ("preprocess", "train", "score", "index")


class RssSampler:
    """Peak RSS of a driver process (default: this one) and of every Ray worker process,
    sampled every 0.2 s."""

    def __init__(self, driver_pid: int | None = None) -> None:
        import psutil

        self.psutil, self.me = psutil, psutil.Process(driver_pid)
        self.driver = 0
        self.workers: dict[int, int] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.wait(0.2):
            try:
                self.driver = max(self.driver, self.me.memory_info().rss)
            except self.psutil.NoSuchProcess:
                return
            for proc in self.psutil.process_iter(["pid", "name", "cmdline"]):
                try:
                    line = " ".join(proc.info["cmdline"] or [])
                    if "default_worker.py" in line or (proc.info["name"] or "").startswith("ray::"):
                        rss = proc.memory_info().rss
                        self.workers[proc.pid] = max(self.workers.get(proc.pid, 0), rss)
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    continue

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def run_size(n: int, folder: Path, epochs: int) -> dict:
    """Every stage at ``n`` spectra, in this (fresh) process; returns its figures."""
    import labkit
    from labkit.spectra import mock_source, preprocess, rest_grid
    from labkit.vae import TrainConfig, train
    from labkit.vectors import build_index

    figures: dict = {"n": n, "stages": {}}
    started = time.perf_counter()
    labkit.connect()
    try:
        with RssSampler() as rss:

            def timed(name, fn):
                t0 = time.perf_counter()
                value = fn()
                seconds = time.perf_counter() - t0
                figures["stages"][name] = {"s": seconds, "spectra_per_s": n / seconds}
                print(f"  {n}: {name} {seconds:.1f} s ({n / seconds:.0f}/s)", flush=True)
                return value

            store = timed(
                "preprocess",
                lambda: preprocess(
                    mock_source(n, 0.01, seed=0),
                    grid=rest_grid(*GRID),
                    out=folder / "survey.zarr",
                    progress=False,
                ),
            )
            config = TrainConfig(epochs=epochs, seed=0)
            result = timed(
                "train",
                lambda: train(store, config, checkpoint_dir=folder / "ckpt", progress=False),
            )
            epoch_s = [h["seconds"] for h in result.history]
            figures["train_epoch_s"] = float(np.median(epoch_s))
            print(f"  {n}: one epoch {figures['train_epoch_s']:.1f} s", flush=True)
            model = result.model
            scores = timed("score", lambda: model.anomaly_score(store, progress=False))
            assert len(scores) == n
            index = timed(
                "index", lambda: build_index(model, store, folder / "spectra.db", progress=False)
            )
            figures["index_rows"] = index.count()
            index.close()
        figures["driver_peak_rss"] = rss.driver
        figures["worker_peak_rss"] = sorted(rss.workers.values(), reverse=True)[:4]
        figures["store_bytes_per_spectrum"] = store.nbytes_on_disk() / n
        figures["train_spectra"] = len(result.history) and n - round(n * config.val_fraction)
    finally:
        labkit.disconnect()
    figures["wall_s"] = time.perf_counter() - started
    return figures


def in_subprocess(n: int, epochs: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=os.environ.get("SCALE_DIR")))
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--size",
                str(n),
                "--folder",
                str(folder),
                "--epochs",
                str(epochs),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        sys.stderr.write(out.stderr[-2000:] if "Traceback" in out.stderr else "")
        print(out.stdout.split("FIGURES ")[0], end="")
        return json.loads(out.stdout.split("FIGURES ")[1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the 2-worker speedup, in turns -------------------------------------------------------------
def _plain_task(args):
    """The raw tool: the same chunk work as a bare Ray task (generate, preprocess, write)."""
    from labkit.spectra.to_store import write_task

    return write_task(args)


def speedup(n: int, turns: int) -> dict:
    import ray

    import labkit
    from labkit.spectra import mock_source, preprocess, rest_grid
    from labkit.spectra.store import CHUNK_ROWS, create_store
    from labkit.spectra.to_store import Plan

    grid = rest_grid(*GRID)
    folder = Path(tempfile.mkdtemp(prefix="scale-speedup-", dir=os.environ.get("SCALE_DIR")))
    here, there, plain = [], [], []
    cluster = labkit.connect()
    try:
        remote = ray.remote(num_cpus=1)(_plain_task)
        # warm the workers (imports) as the driver is warm, so no turn pays for it
        preprocess(mock_source(4 * CHUNK_ROWS), grid=grid, out=folder / "warm", progress=False)
        for turn in range(turns):
            for where, times in ((False, here), (cluster, there)):
                path = folder / f"store-{turn}-{bool(where)}"
                t0 = time.perf_counter()
                preprocess(
                    mock_source(n, 0.01, seed=turn),
                    grid=grid,
                    out=path,
                    cluster=where,
                    progress=False,
                )
                times.append(time.perf_counter() - t0)
            path = folder / f"store-{turn}-plain"
            source = mock_source(n, 0.01, seed=turn)
            t0 = time.perf_counter()
            plan = Plan(source, grid, CHUNK_ROWS, None, None)
            store = create_store(
                path, rows=n, wave=grid, chunk_rows=CHUNK_ROWS, inputs=plan.inputs, overwrite=True
            )
            tasks = [plan.task(str(store.path), k) for k in range(store.n_chunks)]
            ray.get([remote.remote(task) for task in tasks])
            plain.append(time.perf_counter() - t0)
            print(
                f"  turn {turn}: in-process {here[-1]:.1f} s, cluster {there[-1]:.1f} s, "
                f"plain Ray {plain[-1]:.1f} s",
                flush=True,
            )
    finally:
        labkit.disconnect()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "in_process_s": float(np.median(here)),
        "cluster_s": float(np.median(there)),
        "plain_ray_s": float(np.median(plain)),
    }


# -- compression: bytes per spectrum against read speed -------------------------------------------
def codecs(rows: int = 4096) -> dict:
    """Each candidate codec on the same chunk of a store: bytes per spectrum, write and read
    spectra/s (best of three reads), against uncompressed Zarr (the raw tool)."""
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    from labkit.spectra import mock_source, preprocess, rest_grid

    candidates = {
        "none": None,
        "zstd-1": [ZstdCodec(level=1)],
        "blosc-zstd-1-bitshuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")],
        "blosc-zstd-1-shuffle": [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")],
        "blosc-lz4-5-bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    }
    folder = Path(tempfile.mkdtemp(prefix="scale-codecs-", dir=os.environ.get("SCALE_DIR")))
    results = {}
    try:
        part = preprocess(
            mock_source(rows, 0.01, seed=0).rows(0, rows),
            grid=rest_grid(*GRID),
            cluster=False,
            progress=False,
        )
        for name, compressors in candidates.items():
            group = zarr.open_group(folder / name, mode="w", zarr_format=3)
            t0 = time.perf_counter()
            for array in ("flux", "ivar", "mask"):
                data = getattr(part, array)
                stored = group.create_array(
                    array,
                    shape=data.shape,
                    chunks=(1024, data.shape[1]),
                    dtype=data.dtype,
                    compressors=compressors,
                )
                stored[:] = data
            write_s = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (folder / name).rglob("*") if p.is_file())
            read_s = []
            for _ in range(3):
                t0 = time.perf_counter()
                for array in ("flux", "ivar", "mask"):
                    zarr.open_array(folder / name / array, mode="r")[:]
                read_s.append(time.perf_counter() - t0)
            results[name] = {
                "bytes_per_spectrum": size / rows,
                "write_spectra_per_s": rows / write_s,
                "read_spectra_per_s": rows / min(read_s),
            }
            print(
                f"  {name:<26}{size / rows:>8.0f} B  write {rows / write_s:>8.0f}/s  "
                f"read {rows / min(read_s):>8.0f}/s",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return results


def full_demo(n: int = 1_600_000, epochs: int = 2, out: str | None = None) -> dict:
    """``labkit demo --spectra N --epochs E`` end to end, its RSS and its workers' sampled.

    ``out``: the demo's folder, kept afterwards (a rerun completes its store); default a
    temporary one, removed.
    """
    keep = out is not None
    folder = (
        Path(out)
        if keep
        else Path(tempfile.mkdtemp(prefix="scale-full-", dir=os.environ.get("SCALE_DIR")))
    )
    labkit = Path(sys.executable).parent / "labkit"
    command = [
        str(labkit),
        "demo",
        "--spectra",
        str(n),
        "--epochs",
        str(epochs),
        "--out",
        str(folder),
    ]
    try:
        t0 = time.perf_counter()
        with open(folder.parent / f"{folder.name}.log", "w") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            with RssSampler(proc.pid) as rss:
                returncode = proc.wait()
        wall = time.perf_counter() - t0
        if returncode != 0:
            raise SystemExit(f"labkit demo failed ({returncode}); see {log.name}")
        summary = json.loads((folder / "summary.json").read_text())
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "wall_s": wall,
        "driver_peak_rss": rss.driver,
        "worker_peak_rss": sorted(rss.workers.values(), reverse=True)[:4],
        "demo_summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k and 20k spectra")
    parser.add_argument(
        "--full", action="store_true", help="also `labkit demo` on 1.6M spectra (2 epochs)"
    )
    parser.add_argument("--full-only", action="store_true", help="only the 1.6M demo")
    parser.add_argument("--full-out", help="the 1.6M demo's folder, kept (a rerun resumes)")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size:  # one size, in this fresh process
        figures = run_size(args.size, Path(args.folder), args.epochs)
        print("FIGURES " + json.dumps(figures))
        return
    if args.full_only:
        full = full_demo(out=args.full_out)
        metrics = {
            "full_wall_s": full["wall_s"],
            "full_peak_rss_gb": max([full["driver_peak_rss"], *full["worker_peak_rss"]]) / 2**30,
            "full": full,
        }
        print(json.dumps(metrics, indent=2))
        (Path(__file__).parent / "results").mkdir(exist_ok=True)
        (Path(__file__).parent / "results" / "scale-full.json").write_text(
            json.dumps({"name": "scale-full", "metrics": metrics}, indent=2) + "\n"
        )
        return
    small, large = (5_000, 20_000) if args.quick else (20_000, 200_000)
    sizes = {small: in_subprocess(small, 1), large: in_subprocess(large, 1)}
    turns = speedup(small if args.quick else 20_000, 2 if args.quick else 3)
    compression = codecs()

    def peak(f):
        return max([f["driver_peak_rss"], *f["worker_peak_rss"]])

    throughput = {
        s: sizes[large]["stages"][s]["spectra_per_s"] / sizes[small]["stages"][s]["spectra_per_s"]
        for s in STAGES
    }
    metrics = {
        "scale_rss_ratio": peak(sizes[large]) / peak(sizes[small]),
        "scale_throughput_ratio": min(throughput.values()),
        "score_cost_ratio": (sizes[large]["stages"]["score"]["s"] / large)
        / (sizes[large]["train_epoch_s"] / sizes[large]["train_spectra"]),
        "speedup_2_workers_store": turns["in_process_s"] / turns["cluster_s"],
        "speedup_2_workers_plain_ray": turns["in_process_s"] / turns["plain_ray_s"],
        "sizes": {str(k): v for k, v in sizes.items()},
        "throughput_ratio_by_stage": throughput,
        "speedup_turns": turns,
        "codecs": compression,
    }
    if args.full:
        full = full_demo(out=args.full_out)
        metrics["full_wall_s"] = full["wall_s"]
        metrics["full_peak_rss_gb"] = peak(full) / 2**30
        metrics["full"] = full
    rows = [
        (
            f"{s} spectra/s at {large}",
            sizes[large]["stages"][s]["spectra_per_s"],
            sizes[small]["stages"][s]["spectra_per_s"],
            f"vs {small}: >= 0.85",
        )
        for s in STAGES
    ]
    rows += [
        ("peak RSS (MB)", peak(sizes[large]) / 2**20, peak(sizes[small]) / 2**20, "<= 1.2"),
        ("preprocess s: in-process", turns["in_process_s"], turns["cluster_s"], ">= 1.7"),
        ("preprocess s: plain Ray", turns["plain_ray_s"], turns["cluster_s"], "labkit ~ raw"),
    ]
    raw = compression["none"]
    rows += [
        (
            f"read/s {name}",
            c["read_spectra_per_s"],
            raw["read_spectra_per_s"],
            f"{c['bytes_per_spectrum'] / raw['bytes_per_spectrum']:.2f} of the bytes",
        )
        for name, c in compression.items()
        if name != "none"
    ]
    print_table(f"survey scale ({small} vs {large} spectra, 2 CPUs)", rows)
    write_results("scale", args.quick, metrics)


if __name__ == "__main__":
    main()
