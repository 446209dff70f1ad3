"""SLURM figures against a real single-node SLURM (tests/slurmbed.py; root).

- ``slurm_dask_ready_s``: ``labkit.connect(backend="dask", on="slurm", jobs=2)`` until both
  workers are connected (median over turns); beside it dask-jobqueue's own ``SLURMCluster`` +
  ``scale(jobs=2)`` + ``wait_for_workers(2)`` with the same options (the raw tool);
- ``slurm_submit_overhead_s``: median seconds from ``sbatch`` to a trivial job starting on the
  idle node (the job writes the time it began).

Not yet measured: ``slurm_batch_speedup`` (batches as job arrays are not built).

    sudo .venv/bin/python benchmarks/slurm.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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
    out = bed.run("sbatch", "--cpus-per-task=1", "--mem=50M", "--wrap", f"date +%s.%N > {stamp}")
    assert out.returncode == 0, out.stderr
    while not stamp.exists() or not stamp.read_text().strip():
        time.sleep(0.05)
    began = float(stamp.read_text())
    while bed.jobs():
        time.sleep(0.1)
    return began - started


def wait_idle(bed) -> None:
    while bed.jobs():
        time.sleep(0.2)


def main() -> None:
    from tests.slurmbed import slurm_bed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 turns instead of 5")
    args = parser.parse_args()
    turns = 2 if args.quick else 5
    with slurm_bed() as bed, tempfile.TemporaryDirectory() as scratch:
        os.environ["SLURM_CONF"] = str(bed.conf)
        folder = Path(scratch)
        ours, raw, submit = [], [], []
        for _ in range(turns):  # in turns, so both sides share the machine's state
            ours.append(labkit_ready(folder))
            wait_idle(bed)
            raw.append(raw_ready(folder))
            wait_idle(bed)
            submit.append(submit_overhead(bed, folder))
    metrics = {
        "slurm_dask_ready_s": statistics.median(ours),
        "slurm_dask_ready_raw_s": statistics.median(raw),
        "slurm_submit_overhead_s": statistics.median(submit),
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
            )
        ],
    )
    print(f"submit to start, median: {metrics['slurm_submit_overhead_s']:.2f} s")
    write_results("slurm", args.quick, metrics)


if __name__ == "__main__":
    main()
