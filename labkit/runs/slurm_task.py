"""One run of a batch's SLURM job array: ``python -m labkit.runs.slurm_task BATCH_DIR``.

SLURM starts this once per array task, on whichever node; ``SLURM_ARRAY_TASK_ID`` is the
run's index in the grid (``slurm.json`` in the batch folder holds its parameters). It runs
the notebook with ``execute_task``, in the bundle's source folder as every batch does, writes
the executed notebook where ``results.json`` points, and then, last, its outcome file: a
task that left no outcome never finished (``labkit.runs.slurm_array`` reads it as lost or
timed out, and submits it again).

The notebook runs in a thread so that SIGTERM (``scancel``, the walltime) stays with this
process: it then exits at once and writes nothing. In the main thread nbclient would catch
the signal itself, shut the kernel down and report the run as a failed notebook, which is
never retried. The kernel, whose parent this was, ends by itself (ipykernel watches its
parent process).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from labkit.clusters.where import this_host
from labkit.runs.bundle import load_bundle, write_json
from labkit.runs.execute import execute_task, make_task
from labkit.runs.slurm_array import outcome_path, read_state


def run_one(batch_dir: Path, index: int) -> dict[str, Any]:
    """Execute run ``index`` of the batch; its outcome, the notebook's path in it."""
    state = read_state(batch_dir)
    planned = state["tasks"][index]
    bundle = load_bundle(state["bundle"])
    task = make_task(bundle, planned["parameters"], index)
    task["source"] = str(bundle.notebook_path)
    task["env"] = planned["env"]
    outcome = execute_task(task)
    text = outcome.pop("notebook")
    outcome["notebook"] = None
    if text is not None:
        (batch_dir / planned["notebook"]).write_text(text)
        outcome["notebook"] = planned["notebook"]
    return outcome


def _skip_slow_optional_imports() -> None:
    """Each task is a fresh process that imports nbformat, whose jsonschema imports the
    optional ``rfc3987_syntax`` if installed: it builds a grammar at import, over a second of
    CPU per task, for an "iri" format check nbformat's schema never uses."""
    sys.modules.setdefault("rfc3987_syntax", None)  # None: jsonschema's ImportError path


def _leave(signum: int, _frame: object) -> None:
    os._exit(128 + signum)  # no outcome: the watcher sees a task that never finished


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or "SLURM_ARRAY_TASK_ID" not in os.environ:
        print("usage: python -m labkit.runs.slurm_task BATCH_DIR (as a SLURM array task)")
        return 2
    batch_dir = Path(args[0])
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    signal.signal(signal.SIGTERM, _leave)
    _skip_slow_optional_imports()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome.update(run_one(batch_dir, index))
        except Exception as exc:  # a bundle gone, a folder it cannot write: the run failed
            outcome.update(
                index=index,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                worker_host=this_host(),
                records={},
                notebook=None,
            )

    worker = threading.Thread(target=work, name=f"labkit-run-{index}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)  # wakes for SIGTERM
    outcome["slurm_job_id"] = f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{index}"
    write_json(outcome_path(batch_dir, index), outcome)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcome is on disk and the kernel shut down: skip the interpreter's teardown of
    # jupyter_client's sockets and loop (up to a second or more), which holds the CPU the
    # next array task is waiting for.
    os._exit(code)
