"""``labkit batch``: a bundle over the cartesian product of a parameter grid, on a cluster.

One papermill run is one cluster task. A run whose notebook fails is recorded with its error
and the rest go on. A run the cluster loses (its worker died after the backend's own task
retries) is submitted again, up to ``retries`` more times.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from labkit.checks import whole
from labkit.clusters import Cluster, ClusterSpec, using_cluster
from labkit.clusters.mapping import ChunkLost, ItemFailure
from labkit.errors import ParameterError
from labkit.log import logger
from labkit.runs.bundle import BATCH_RESULTS, Bundle, load_bundle, now_iso, stamp, write_json
from labkit.runs.execute import execute_task, make_task, result_entry
from labkit.runs.parameters import check_grid
from labkit.runs.results import RUN_STATUSES, BatchCluster, BatchEntry, BatchStatus
from labkit.runs.run_tracking import RunTracking, kernel_env
from labkit.runs.ship import ship_data

RUNS_FOLDER = "runs"
_SAVE_EVERY_S = 1.0


@dataclass
class BatchResult:
    """A finished batch: its folder, one entry per run (as in results.json), and totals."""

    path: Path
    runs: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(run["status"] == "ok" for run in self.runs)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [run for run in self.runs if run["status"] != "ok"]


def expand_grid(grid: Mapping[str, Iterable[Any]]) -> list[dict[str, Any]]:
    """The cartesian product, in grid order: the last name varies fastest."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def batch(
    bundle: str | os.PathLike | Bundle,
    grid: Mapping[str, Iterable[Any]],
    *,
    on: ClusterSpec = None,
    retries: int = 2,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    **slurm: Any,
) -> BatchResult:
    """Run ``bundle`` for every combination in ``grid`` on a cluster; write results.json.

    ``on``: a Cluster, ``"local"``/``"ray"``/``"dask"`` (a local cluster of that backend),
    an address or registered name, or None (the active cluster, else a local one). A
    cluster this call connects replaces the active one (as ``labkit.connect`` does) and is
    closed at the end. ``on="slurm"`` or ``"slurm:PROFILE"``: one SLURM job array whose
    tasks share the runs, one fresh kernel per run (``labkit.runs.slurm_array``; ``slurm``:
    ``SlurmOptions`` fields over the profile's, e.g. ``partition="short",
    walltime="01:00:00"`` (a task's, for all the runs it takes), and ``tasks=N``, the
    array's width (default: as many as the partition's CPUs run at once), and
    ``signal="B:USR1@120"``, SLURM's ``--signal``, passed on to the kernel). Output: ``out``
    (default ``BUNDLE/batches/STAMP``) with ``results.json`` and ``runs/NNN-....ipynb``.
    """
    retries = whole("retries", retries, 0)
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    grid = check_grid(bundle.parameters, grid)
    out_dir = Path(out) if out is not None else bundle.path / "batches" / stamp()
    profile = _slurm_target(on)
    if profile is not False:
        from labkit.runs.slurm_array import submit_array

        return submit_array(bundle, grid, profile, slurm, retries, out_dir, progress)
    if slurm:
        raise ParameterError(
            f"{', '.join(sorted(slurm))}: options of a SLURM batch; add on='slurm'"
        )
    with using_cluster(on, required=True) as cluster:
        (out_dir / RUNS_FOLDER).mkdir(parents=True, exist_ok=True)
        return _Batch(bundle, grid, cluster, retries, out_dir, progress).run()


def _slurm_target(on: ClusterSpec) -> str | None | Literal[False]:
    """For ``on="slurm:PROFILE"`` the profile, for ``"slurm"`` None; False for any cluster."""
    if not isinstance(on, str) or not (on == "slurm" or on.startswith("slurm:")):
        return False
    return on.partition(":")[2] or None


def run_slug(index: int, parameters: Mapping[str, Any]) -> str:
    text = "-".join(f"{name}={value}" for name, value in parameters.items())
    text = re.sub(r"[^\w.=+-]+", "_", text)[:80]
    return f"{index:03d}-{text}" if text else f"{index:03d}"


class _Batch:
    """The state of one batch while it runs: entries, attempts, and the results file."""

    def __init__(self, bundle, grid, cluster: Cluster, retries: int, out_dir: Path, progress):
        self.bundle, self.grid, self.cluster, self.retries = bundle, grid, cluster, retries
        combos = expand_grid(grid)
        self.out_dir, self.progress = out_dir, progress
        self.tasks = [make_task(bundle, params, index) for index, params in enumerate(combos)]
        self.tracking = RunTracking.for_batch(bundle, grid, len(combos))
        self.tracked = [self.tracking.start(run_slug(i, p), p) for i, p in enumerate(combos)]
        for task, tracked in zip(self.tasks, self.tracked, strict=True):
            task["source"] = str(bundle.notebook_path)
            task["env"] = kernel_env(tracked)
        self.entries = [
            BatchEntry(
                parameters=dict(params),
                status="pending",
                index=i,
                mlflow_run_id=tracked.run_id if tracked is not None else None,
            )
            for (i, params), tracked in zip(enumerate(combos), self.tracked, strict=True)
        ]
        self.created = now_iso()
        self.start = time.perf_counter()
        self.saved_at = 0.0

    def run(self) -> BatchResult:
        from tqdm.auto import tqdm

        shipped = ship_data(self.cluster, self.bundle.manifest)  # before anything is submitted
        for task in self.tasks:
            task["shipped"] = shipped
            task["data_files"] = self.bundle.manifest.get("data_files", [])
        todo = list(range(len(self.tasks)))
        desc = f"batch {self.bundle.name} on {self.cluster.backend}"
        with tqdm(total=len(todo), desc=desc, unit="run", disable=not self.progress) as bar:
            try:
                for round_ in range(self.retries + 1):
                    lost = self._round(todo, bar)
                    if not lost:
                        break
                    todo = lost
                    logger.warning("batch %s: %d run(s) lost", self.bundle.name, len(lost))
                    if round_ < self.retries:
                        bar.write(f"labkit: {len(lost)} run(s) lost with their worker; retrying")
                    else:
                        bar.update(len(lost))
            except BaseException:  # Ctrl-C or a cluster that went away: keep what finished
                for entry in self.entries:
                    if entry.status in ("pending", "lost"):
                        entry.status = "cancelled"
                        self.tracking.finish(self.tracked[entry.index], entry, None)
                self.tracking.close(self._save("interrupted"), interrupted=True)
                raise
        for entry in self.entries:
            if entry.status == "lost":  # lost on its last attempt too
                self.tracking.finish(self.tracked[entry.index], entry, None)
        summary = self._save("done")
        self.tracking.close(summary)
        return BatchResult(self.out_dir, [entry.to_json() for entry in self.entries], summary)

    def _round(self, todo: list[int], bar) -> list[int]:
        """Submit ``todo``; record each outcome as it arrives; return the runs lost."""
        lost = []
        for index in todo:
            self.entries[index].attempts += 1
        stream = self.cluster.run_chunks(execute_task, [[self.tasks[i]] for i in todo])
        try:
            for position, outcome in stream:
                index = todo[position]
                if isinstance(outcome, ChunkLost):
                    entry = self.entries[index]
                    entry.status = "lost"
                    entry.error = f"{type(outcome.error).__name__}: {outcome.error}"
                    lost.append(index)
                    continue
                if isinstance(outcome, ItemFailure):  # the task itself broke (e.g. no papermill)
                    outcome = {
                        "status": "failed",
                        "error": f"{type(outcome.error).__name__}: {outcome.error}",
                    }
                else:
                    outcome = outcome[0]
                self._finish(index, outcome)
                bar.update(1)
                failed = sum(entry.status == "failed" for entry in self.entries)
                if failed:
                    bar.set_postfix(failed=failed)
                if time.perf_counter() - self.saved_at > _SAVE_EVERY_S:
                    self._save("running")
        finally:
            stream.close()
        return lost

    def _finish(self, index: int, outcome: Mapping[str, Any]) -> None:
        entry = self.entries[index]
        notebook = None
        if outcome.get("notebook") is not None:
            notebook = f"{RUNS_FOLDER}/{run_slug(index, entry.parameters)}.ipynb"
            (self.out_dir / notebook).write_text(outcome["notebook"])
        finished = result_entry(outcome, entry.parameters, notebook)
        finished.mlflow_run_id = entry.mlflow_run_id
        self.entries[index] = BatchEntry(**asdict(finished), index=index, attempts=entry.attempts)
        where = self.out_dir / notebook if notebook is not None else None
        self.tracking.finish(self.tracked[index], finished, where)

    def _save(self, status: BatchStatus) -> dict[str, Any]:
        header = {
            "bundle": str(self.bundle.path),
            "name": self.bundle.name,
            "created": self.created,
            "cluster": asdict(BatchCluster(self.cluster.backend, self.cluster.address)),
            "grid": self.grid,
            "retries": self.retries,
            "mlflow": self.tracking.reference(self.tracking.parent),
        }
        duration = time.perf_counter() - self.start
        summary = save_results(self.out_dir, header, self.entries, status, duration)
        self.saved_at = time.perf_counter()
        return summary


def save_results(
    out_dir: Path,
    header: Mapping[str, Any],
    entries: list[BatchEntry],
    status: BatchStatus,
    duration_s: float,
) -> dict[str, Any]:
    """Write ``results.json``: ``header`` (bundle, name, created, cluster, grid, retries,
    mlflow), the batch's status, its totals, and every entry; return the totals."""
    counts = {state: sum(entry.status == state for entry in entries) for state in RUN_STATUSES}
    summary = {
        "total": len(entries),
        **{
            state: count
            for state, count in counts.items()
            if count or state not in ("timeout", "cancelled")  # these two only when they occur
        },
        "duration_s": round(duration_s, 3),
    }
    payload = {"kind": "batch", **header, "status": status, "summary": summary}
    write_json(out_dir / BATCH_RESULTS, payload | {"runs": [e.to_json() for e in entries]})
    return summary
