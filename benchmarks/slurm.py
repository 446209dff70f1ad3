"""SLURM figures against a real single-node SLURM (tests/slurmbed.py; root).

- ``slurm_dask_ready_s``: ``labkit.connect(backend="dask", on="slurm", jobs=2)`` until both
  workers are connected (median over turns); beside it dask-jobqueue's own ``SLURMCluster`` +
  ``scale(jobs=2)`` + ``wait_for_workers(2)`` with the same options (the raw tool);
- ``slurm_ray_ready_s``: ``labkit.connect(backend="ray", on="slurm", jobs=2)`` until both Ray
  nodes have joined (one job: the head, then a node joining it; on a test-bed address of this
  host, ``tests.netbed.routable_address``, as Ray joins nodes only on a routable address),
  median over turns (report);
- ``slurm_submit_overhead_s``: median seconds from ``sbatch`` to a trivial job starting on the
  idle node (the job writes the time it began);
- ``slurm_batch_speedup``: 8 runs of a small bundle one after another with
  ``papermill.execute_notebook`` (the raw tool), over the same 8 as one job array with
  ``labkit batch --on slurm`` (2 one-CPU tasks at a time), timed from submission until
  ``batch`` returns with results.json written (the tasks' own exit, kernels shutting down and
  SLURM's clean-up, is waited out untimed before the next turn); median over turns (2 with
  ``--quick``, else 3; each side first in every other turn), both sides warmed by one run
  first. The array is as wide as labkit makes it by default (2 tasks on the 2-CPU node, each
  taking runs in turn). ``slurm_batch_array_until_idle_s``: the same arrays until their tasks
  have left the queue;
- ``slurm_many_*``: 32 runs as a 32-task array, the many-kernels case where papermill users
  meet ZMQ's "Address already in use" and kernel start timeouts: runs ok, kernels labkit had
  to start again, that message in the tasks' output.

    sudo .venv/bin/python benchmarks/slurm.py [--quick] [--batch-only]

``--batch-only`` measures the batch figures alone (printed, not written to results/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from batch import N_BATCH, run_sequentially, write_notebook  # noqa: E402
from report import print_table, write_results  # noqa: E402

OPTIONS = {"cores": 1, "memory": "1GiB", "interface": "lo"}


def labkit_ready(folder: Path) -> float:
    import labkit

    started = time.perf_counter()
    cluster = labkit.connect(
        backend="dask", on="slurm", jobs=2, log_directory=str(folder), **OPTIONS
    )
    seconds = time.perf_counter() - started
    cluster.close()
    return seconds


def ray_ready(folder: Path, interface: str) -> float:
    import labkit

    started = time.perf_counter()
    options = OPTIONS | {"interface": interface}
    cluster = labkit.connect(
        backend="ray", on="slurm", jobs=2, log_directory=str(folder), **options
    )
    seconds = time.perf_counter() - started
    cluster.close()
    return seconds


def raw_ready(folder: Path) -> float:
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    started = time.perf_counter()
    cluster = SLURMCluster(
        processes=1,
        walltime="00:30:00",
        log_directory=str(folder),
        shared_temp_directory=str(folder),
        security=True,
        scheduler_options={"dashboard_address": "127.0.0.1:0"},
        **OPTIONS,
    )
    client = Client(cluster)
    cluster.scale(jobs=2)
    client.wait_for_workers(2)
    seconds = time.perf_counter() - started
    client.close()
    cluster.close()
    return seconds


def submit_overhead(bed, folder: Path) -> float:
    stamp = folder / f"began-{time.monotonic_ns()}"
    started = time.time()
    flags = ["--cpus-per-task=1", "--mem=50M", f"--output={folder / 'overhead-%j.out'}"]
    out = bed.run("sbatch", *flags, "--wrap", f"date +%s.%N > {stamp}")
    assert out.returncode == 0, out.stderr
    while not stamp.exists() or not stamp.read_text().strip():
        time.sleep(0.05)
    began = float(stamp.read_text())
    while bed.jobs():
        time.sleep(0.1)
    return began - started


def batch_times(bed, folder: Path, turns: int) -> tuple[float, float, float]:
    """Median seconds of ``N_BATCH`` runs: sequential papermill, one labkit job array until
    its results, and the same until its tasks have left the queue."""
    from labkit.runs import batch, freeze, load_bundle

    source = write_notebook(folder / "project" / "analysis.ipynb")
    bundle = load_bundle(freeze(source, name="analysis", out=folder / "bundles"))
    seeds = list(range(N_BATCH))

    def sequential(tag: str) -> float:
        started = time.perf_counter()
        run_sequentially(bundle, seeds, folder, source.parent, tag)
        return time.perf_counter() - started

    def array(tag: str, values: list[int]) -> tuple[float, float]:
        """Submission to results.json; the tasks' own ending (kernels shutting down, SLURM's
        clean-up) is waited for after the clock stops, so it cannot slow the next turn."""
        out = folder / f"array-{tag}"
        started = time.perf_counter()
        result = batch(bundle, {"seed": values}, on="slurm", memory="1GiB", out=out)
        seconds = time.perf_counter() - started
        assert result.ok, result.failed
        wait_idle(bed)
        return seconds, time.perf_counter() - started

    sequential("warm")
    array("warm", [0])
    seq, arr, idle = [], [], []
    for turn in range(turns):  # each side first in every other turn: the machine is shared
        tag = str(turn)
        for side in ("sequential", "array")[:: 1 if turn % 2 == 0 else -1]:
            if side == "sequential":
                seq.append(sequential(tag))
            else:
                until_results, until_idle = array(tag, seeds)
                arr.append(until_results)
                idle.append(until_idle)
    print(f"batch turns (s): sequential {[round(t, 2) for t in seq]}, array "
          f"{[round(t, 2) for t in arr]} ({[round(t, 2) for t in idle]} until idle)")  # fmt: skip
    return statistics.median(seq), statistics.median(arr), statistics.median(idle)


def many_runs(bed, folder: Path, runs: int = 32) -> dict[str, float]:
    """``runs`` runs as an array ``runs`` tasks wide (SLURM starts two at a time on the
    2-CPU node, each with a kernel of its own): how many ended ok, how many kernels had to be
    started again, and how often the tasks' output shows ZMQ's "Address already in use"."""
    from labkit.runs import batch, freeze, load_bundle

    source = write_notebook(folder / "many-project" / "analysis.ipynb")
    bundle = load_bundle(freeze(source, name="many", out=folder / "many-bundles"))
    out = folder / "many"
    started = time.perf_counter()
    grid = {"seed": list(range(runs))}
    result = batch(bundle, grid, on="slurm", memory="1GiB", tasks=runs, out=out, progress=False)
    seconds = time.perf_counter() - started
    wait_idle(bed)
    outcomes = [json.loads(p.read_text()) for p in (out / "slurm" / "outcomes").glob("*.json")]
    said = "".join(p.read_text(errors="replace") for p in (out / "slurm" / "logs").glob("*"))
    return {
        "slurm_many_runs": runs,
        "slurm_many_runs_ok": sum(run["status"] == "ok" for run in result.runs),
        "slurm_many_kernel_restarts": sum(o.get("kernel_starts", 1) - 1 for o in outcomes),
        "slurm_many_zmq_address_in_use": said.count("Address already in use"),
        "slurm_many_runs_s": round(seconds, 3),
    }


def wait_idle(bed) -> None:
    while bed.jobs():
        time.sleep(0.2)


def batch_only(quick: bool) -> None:
    from tests.slurmbed import slurm_bed

    with slurm_bed() as bed, tempfile.TemporaryDirectory() as scratch:
        os.environ["SLURM_CONF"] = str(bed.conf)
        sequential_s, array_s, _ = batch_times(bed, Path(scratch), 2 if quick else 3)
    print(f"{N_BATCH} runs: sequential {sequential_s:.2f} s, array {array_s:.2f} s: "
          f"{sequential_s / array_s:.2f}x")  # fmt: skip


def main() -> None:
    from tests.netbed import routable_address
    from tests.slurmbed import slurm_bed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 turns instead of 5")
    parser.add_argument("--batch-only", action="store_true", help="the batch figures alone")
    args = parser.parse_args()
    if args.batch_only:
        batch_only(args.quick)
        return
    turns = 2 if args.quick else 5
    with (
        slurm_bed() as bed,
        routable_address() as (interface, _),
        tempfile.TemporaryDirectory() as scratch,
    ):
        os.environ["SLURM_CONF"] = str(bed.conf)
        folder = Path(scratch)
        ours, raw, submit, ray = [], [], [], []
        for _ in range(turns):  # in turns, so both sides share the machine's state
            ours.append(labkit_ready(folder))
            wait_idle(bed)
            raw.append(raw_ready(folder))
            wait_idle(bed)
            ray.append(ray_ready(folder, interface))
            wait_idle(bed)
            submit.append(submit_overhead(bed, folder))
        sequential_s, array_s, idle_s = batch_times(bed, folder, 2 if args.quick else 3)
        many = many_runs(bed, folder)
    metrics = {
        "slurm_dask_ready_s": statistics.median(ours),
        "slurm_dask_ready_raw_s": statistics.median(raw),
        "slurm_ray_ready_s": statistics.median(ray),
        "slurm_submit_overhead_s": statistics.median(submit),
        "slurm_batch_speedup": round(sequential_s / array_s, 4),
        "slurm_batch_sequential_s": round(sequential_s, 3),
        "slurm_batch_array_s": round(array_s, 3),
        "slurm_batch_array_until_idle_s": round(idle_s, 3),
        **many,
        "turns": turns,
    }
    print_table(
        "SLURM (single node, 2 CPUs)",
        [
            (
                "dask ready, 2 jobs (s)",
                metrics["slurm_dask_ready_s"],
                metrics["slurm_dask_ready_raw_s"],
                "report",
            ),
            (f"{N_BATCH} runs: array/sequential (s)", array_s, sequential_s, "<= 0.667"),
        ],
    )
    print(f"batch as a job array: {metrics['slurm_batch_speedup']:.2f}x sequential papermill")
    print(f"submit to start, median: {metrics['slurm_submit_overhead_s']:.2f} s")
    print(f"ray ready, 2 nodes in one job, median: {metrics['slurm_ray_ready_s']:.2f} s")
    print(f"{many['slurm_many_runs']} one-run tasks: {many['slurm_many_runs_ok']} ok, "
          f"{many['slurm_many_kernel_restarts']} kernels started again, "
          f"{many['slurm_many_zmq_address_in_use']} 'Address already in use'")  # fmt: skip
    write_results("slurm", args.quick, metrics)


if __name__ == "__main__":
    main()
