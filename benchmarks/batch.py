"""labkit freeze / run / batch against raw papermill, measured in one run.

speedup_vs_sequential: 8 runs of a small notebook one after another with
`papermill.execute_notebook`, divided by the same 8 through `labkit.runs.batch` on a 2-worker
local cluster (already started; both sides warmed by one run first). per_run_ratio_vs_papermill:
mean wall time of one `labkit.runs.run` (parameter checks, papermill, records, result.json) over
one raw `papermill.execute_notebook`, interleaved. freeze_s: `labkit.runs.freeze` of a 50-cell
notebook (median).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

N_BATCH = 8
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(path: Path, n_cells: int = 4) -> Path:
    """A small analysis: parameters, a data file read by relative path, numpy, one record."""
    cells = [
        "import numpy as np\nimport labkit",
        "n = 10000\nseed = 0",
        'offset = float(open("data/offset.txt").read())',
        "rng = np.random.default_rng(seed)\n"
        'labkit.record("mean", float(rng.normal(size=n).mean() + offset))',
    ]
    cells += [f"x{i} = {i} * 2  # filler cell {i}" for i in range(n_cells - len(cells))]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    (path.parent / "data").mkdir(parents=True, exist_ok=True)
    (path.parent / "data" / "offset.txt").write_text("0.5\n")
    nbformat.write(nb, path)
    return path


def measure_freeze(work: Path, repeats: int) -> float:
    from labkit.runs import freeze

    source = write_notebook(work / "fifty" / "fifty.ipynb", n_cells=50)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        freeze(source, name=f"fifty-{i}", out=work / "frozen")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_per_run(bundle: Path, source: Path, work: Path, repeats: int) -> dict[str, float]:
    import papermill

    from labkit.runs import load_bundle, run

    loaded = load_bundle(bundle)
    notebook = str(loaded.notebook_path)

    def raw(i: int) -> None:
        papermill.execute_notebook(
            notebook,
            str(work / f"raw-{i}.ipynb"),
            parameters={"seed": i},
            cwd=str(source.parent),
            progress_bar=False,
        )

    def ours(i: int) -> None:
        result = run(loaded, {"seed": i}, out=work / f"run-{i}", progress=False)
        assert result.ok, result.error

    raw(1000)
    ours(1000)  # warm both paths
    timings: dict[str, list[float]] = {"raw": [], "labkit": []}
    for i in range(repeats):  # interleaved, so drift on a shared machine hits both alike
        for name, fn in (("raw", raw), ("labkit", ours)):
            start = time.perf_counter()
            fn(i)
            timings[name].append(time.perf_counter() - start)
    return {name: statistics.mean(values) for name, values in timings.items()}


def run_sequentially(bundle, seeds: list[int], out: Path, cwd: Path, tag: str) -> None:
    """The raw tool's way: ``papermill.execute_notebook`` once per seed, one after another."""
    import papermill

    for seed in seeds:
        papermill.execute_notebook(
            str(bundle.notebook_path),
            str(out / f"seq-{tag}-{seed}.ipynb"),
            parameters={"seed": seed},
            cwd=str(cwd),
            progress_bar=False,
        )


def measure_batch(
    bundle: Path, source: Path, work: Path, backend: str, repeats: int
) -> dict[str, float]:
    import labkit
    from labkit.runs import batch, load_bundle

    loaded = load_bundle(bundle)
    seeds = list(range(N_BATCH))

    labkit.connect(backend=backend, workers=2)
    try:
        warm = batch(loaded, {"seed": [0, 1]}, out=work / "warm", progress=False)
        assert warm.ok, warm.failed
        timings: dict[str, list[float]] = {"sequential": [], "batch": []}
        for r in range(repeats):
            start = time.perf_counter()
            run_sequentially(loaded, seeds, work, source.parent, str(r))
            timings["sequential"].append(time.perf_counter() - start)
            start = time.perf_counter()
            result = batch(loaded, {"seed": seeds}, out=work / f"batch-{r}", progress=True)
            timings["batch"].append(time.perf_counter() - start)
            assert result.ok, result.failed
    finally:
        labkit.disconnect()
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a few minutes)")
    parser.add_argument("--backend", choices=["dask", "ray"], default="dask")
    args = parser.parse_args()
    if args.quick:
        repeats = {"freeze": 3, "per_run": 4, "batch": 2}
    else:
        repeats = {"freeze": 5, "per_run": 10, "batch": 3}

    from labkit.runs import freeze

    with tempfile.TemporaryDirectory(prefix="labkit-bench-batch-") as tmp:
        work = Path(tmp)
        source = write_notebook(work / "project" / "analysis.ipynb")
        bundle = freeze(source, name="analysis", out=work / "bundles")
        freeze_s = measure_freeze(work, repeats["freeze"])
        per_run = measure_per_run(bundle, source, work, repeats["per_run"])
        batches = measure_batch(bundle, source, work, args.backend, repeats["batch"])

    metrics = {
        "speedup_vs_sequential": batches["sequential"] / batches["batch"],
        "per_run_ratio_vs_papermill": per_run["labkit"] / per_run["raw"],
        "freeze_s": freeze_s,
        "sequential_s": batches["sequential"],
        "batch_s": batches["batch"],
        "labkit_run_s": per_run["labkit"],
        "papermill_run_s": per_run["raw"],
    }
    metrics = {key: round(value, 4) for key, value in metrics.items()}
    write_results("batch", args.quick, metrics)
    print_table(
        f"frozen runs: {N_BATCH}-run batch on a 2-worker {args.backend} cluster (seconds)",
        [
            (f"{N_BATCH} runs: batch/seq", batches["batch"], batches["sequential"], "<= 0.625"),
            ("one run: labkit/papermill", per_run["labkit"], per_run["raw"], "<= 1.2"),
        ],
    )
    print(f"freeze of a 50-cell notebook: {freeze_s:.3f} s")


if __name__ == "__main__":
    main()
