"""``labkit run``: execute a bundle once with papermill, and the task every batch run uses.

``execute_task`` runs on whichever process executes it (this one, or a cluster worker): the
notebook travels inside the task and comes back inside the result, so a worker needs to see
only the source folder the notebook reads its data from.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labkit.clusters.where import this_host
from labkit.errors import BundleError
from labkit.log import logger
from labkit.runs.bundle import (
    NOTEBOOK,
    RUN_RESULT,
    Bundle,
    load_bundle,
    now_iso,
    stamp,
    write_json,
)
from labkit.runs.kernel_env import kernel_manager_with_env
from labkit.runs.parameters import check_values
from labkit.runs.records import records_in
from labkit.runs.results import RunEntry, RunStatus
from labkit.runs.run_tracking import RunTracking, kernel_env, usable_here
from labkit.runs.ship import shipped_folder, unseen_files

KERNEL_STARTS = 3  # tries to start a run's kernel before the run counts as failed


@dataclass
class RunResult:
    """One execution: where its notebook and result entry are, and what it recorded."""

    path: Path
    status: RunStatus  # "ok" or "failed"
    error: str | None
    duration_s: float
    parameters: dict[str, Any]
    records: dict[str, Any]
    mlflow_run_id: str | None = None

    @property
    def notebook(self) -> Path:
        return self.path / NOTEBOOK

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def make_task(bundle: Bundle, parameters: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """Everything a worker needs for one run, as plain picklable data."""
    return {
        "index": index,
        "notebook": bundle.notebook_path.read_text(),
        "parameters": dict(parameters),
        "working_dir": str(bundle.working_dir),
        "kernel": bundle.kernel,
    }


def execute_task(task: Mapping[str, Any], progress: bool = False, km: Any = None) -> dict[str, Any]:
    """Run one parameter set with papermill; never raises for the notebook's own failures.

    Returns status, error, duration, worker host and pid, the records, and the executed
    notebook as JSON text (None if the kernel never ran). A kernel that fails to start is
    started again, up to ``KERNEL_STARTS`` times (``kernel_starts`` in the outcome).
    ``km``: a kernel manager of ``kernel_manager_with_env(task env)`` whose kernel the
    caller started beforehand, in the task's working folder, and shuts down afterwards.
    """
    import nbformat
    from papermill import execute_notebook
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    host = this_host()
    outcome: dict[str, Any] = {
        "index": task["index"],
        "status": "failed",
        "error": None,
        "worker_host": host,
        "worker_pid": os.getpid(),
        "records": {},
        "notebook": None,
    }
    working_dir = task["working_dir"]
    if task.get("shipped") and unseen_files(working_dir, task["data_files"]):
        # this host does not see the source folder as the notebook would: its data is here
        shipped = shipped_folder(task["shipped"])
        if shipped.is_dir():
            working_dir = str(shipped)
    if not os.path.isdir(working_dir):
        outcome["error"] = (
            f"worker {host} cannot see the source folder {working_dir}, where this notebook "
            "runs; run the batch on a cluster whose workers share that filesystem"
        )
        outcome["duration_s"] = time.perf_counter() - start
        return outcome
    env = usable_here(task.get("env") or {})
    kernel = {"kernel_manager_class": kernel_manager_with_env(env)} if env else {}
    kernel = {"km": km} if km is not None else kernel
    executed = None
    with tempfile.TemporaryDirectory(prefix="labkit-run-") as scratch:
        output = os.path.join(scratch, NOTEBOOK)
        started: list[bool] = []  # nbclient's hook: the kernel answered, cells may run
        for attempt in range(1, KERNEL_STARTS + 1):
            started.clear()
            try:
                # The kernel starts in working_dir through nbclient's resources, not
                # papermill's cwd= (which calls os.chdir and would race between threads).
                executed = execute_notebook(
                    nbformat.reads(task["notebook"], as_version=4),
                    output,
                    parameters=task["parameters"],
                    kernel_name=task.get("kernel"),
                    progress_bar=progress,
                    request_save_on_cell_execute=False,
                    resources={"metadata": {"path": working_dir}},
                    on_notebook_start=lambda **_: started.append(True),
                    **kernel,
                )
                outcome["status"], outcome["error"] = "ok", None
                break
            except PapermillExecutionError as exc:
                outcome["error"] = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
                break
            except Exception as exc:  # kernel missing or dead, timeouts: still one run's failure
                outcome["error"] = f"{type(exc).__name__}: {exc}"
                if started or attempt == KERNEL_STARTS or type(exc).__name__ == "NoSuchKernel":
                    break
                # ports taken by a kernel starting beside it, a node too busy to answer in
                # time: not the notebook's error, so its kernel is started again
                outcome["kernel_starts"] = attempt + 1
                logger.warning("run %s: kernel did not start (%s); again", task["index"], exc)
        if executed is None and os.path.isfile(output):
            executed = nbformat.read(output, as_version=4)
    if executed is not None:
        executed.metadata.setdefault("papermill", {})["input_path"] = task.get("source")
        outcome["records"] = records_in(executed)
        outcome["notebook"] = nbformat.writes(executed)
    outcome["duration_s"] = time.perf_counter() - start
    return outcome


def run(
    bundle: str | os.PathLike | Bundle,
    parameters: Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
) -> RunResult:
    """Execute ``bundle`` once in this process with typed ``parameters``.

    Names and types are checked against the manifest before anything runs. Writes the
    executed ``notebook.ipynb`` and ``result.json`` to ``out`` (default
    ``BUNDLE/runs/STAMP``). A failing notebook gives ``status == "failed"``, not an exception.
    """
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    values = check_values(bundle.parameters, parameters or {})
    require_working_dir(bundle)
    out_dir = Path(out) if out is not None else bundle.path / "runs" / stamp()
    out_dir.mkdir(parents=True, exist_ok=True)
    created = now_iso()
    task = make_task(bundle, values)
    task["source"] = str(bundle.notebook_path)
    tracking = RunTracking.for_run(bundle)
    tracked = tracking.start(out_dir.name, values)
    task["env"] = kernel_env(tracked)
    outcome = execute_task(task, progress=progress)
    entry = result_entry(outcome, values, notebook=NOTEBOOK)
    entry.mlflow_run_id = tracked.run_id if tracked is not None else None
    if outcome["notebook"] is not None:
        (out_dir / NOTEBOOK).write_text(outcome["notebook"])
    tracking.finish(tracked, entry, out_dir / NOTEBOOK)
    write_json(
        out_dir / RUN_RESULT,
        {"kind": "run", "bundle": str(bundle.path), "name": bundle.name, "created": created}
        | asdict(entry)
        | {"mlflow": tracking.reference(tracked)},
    )
    return RunResult(
        out_dir,
        entry.status,
        entry.error,
        entry.duration_s,
        values,
        entry.records,
        entry.mlflow_run_id,
    )


def result_entry(
    outcome: Mapping[str, Any], parameters: Mapping[str, Any], notebook: str | None
) -> RunEntry:
    """The per-run entry of ``result.json`` / ``results.json`` from a worker's outcome."""
    return RunEntry(
        parameters=dict(parameters),
        status=outcome["status"],
        error=outcome.get("error"),
        duration_s=round(float(outcome.get("duration_s", 0.0)), 3),
        worker_host=outcome.get("worker_host"),
        records=outcome.get("records", {}),
        notebook=notebook if outcome.get("notebook") is not None else None,
    )


def require_working_dir(bundle: Bundle) -> None:
    if not bundle.working_dir.is_dir():
        raise BundleError(
            f"the source folder {bundle.working_dir} of bundle {bundle.name} is gone; the "
            "notebook runs there so its relative data paths resolve",
            path=str(bundle.working_dir),
        )
