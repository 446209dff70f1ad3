"""One task of a batch's SLURM job array: ``python -m labkit.runs.slurm_task BATCH_DIR RUNS``.

SLURM starts this once per array task, on whichever node; ``RUNS`` (e.g. ``0-7``) are the
grid indices the array's tasks share (``slurm.json`` in the batch folder holds their
parameters). The task takes the next run no other task has taken (a claim file made with
``os.link``, atomic on shared filesystems too), runs its notebook with ``execute_task`` in
the bundle's source folder as every batch does, writes the executed notebook where
``results.json`` points and then, last, the run's outcome file; then it takes the next
run, until none is left. A run that left no outcome never finished
(``labkit.runs.slurm_array`` reads it as lost or timed out, and submits it again).

Each notebook runs in a thread so that SIGTERM (``scancel``, the walltime) stays with this
process: it then exits at once and writes nothing. In the main thread nbclient would catch
the signal itself, shut the kernel down and report the run as a failed notebook, which is
never retried. The kernel, whose parent this was, ends by itself (ipykernel watches its
parent process).

SIGUSR1 or SIGUSR2 (``sbatch --signal=B:USR1@SECONDS``: the walltime is near) is passed on
to the running kernel when that kernel handles the signal (``labkit.vae.train`` checkpoints
on SIGUSR1; a kernel that does not handle it would die of it), and the task takes no new
run: the array's other tasks, or the next submission, run those.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from labkit.clusters.where import this_host
from labkit.runs.bundle import load_bundle, write_json
from labkit.runs.execute import execute_task, make_task
from labkit.runs.slurm_array import claim_path, outcome_path, parse_ranges, read_state

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)


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


def claim(batch_dir: Path, job_id: str, task: str, indices: list[int]) -> int | None:
    """Take the first of ``indices`` no task of the array has taken; None when all are."""
    folder = claim_path(batch_dir, job_id, 0).parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".task-") as mine:
        mine.write(task)
        mine.flush()
        for index in indices:
            try:
                os.link(mine.name, claim_path(batch_dir, job_id, index))
            except FileExistsError:
                continue
            return index
    return None


def _skip_slow_optional_imports() -> None:
    """Each task is a fresh process that imports nbformat, whose jsonschema imports the
    optional ``rfc3987_syntax`` if installed: it builds a grammar at import, over a second of
    CPU per task, for an "iri" format check nbformat's schema never uses."""
    sys.modules.setdefault("rfc3987_syntax", None)  # None: jsonschema's ImportError path


def _leave(signum: int, _frame: object) -> None:
    os._exit(128 + signum)  # no outcome: the watcher sees a task that never finished


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: SigCgt in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def kernels() -> list[int]:
    """PIDs of this process's children: the running notebook's kernel."""
    import psutil

    return [child.pid for child in psutil.Process().children()]


class WalltimeWarning:
    """SLURM's warning that the walltime is near: passed on to the kernel; no new run."""

    def __init__(self) -> None:
        self.given = False

    def __call__(self, signum: int, _frame: object) -> None:
        self.given = True
        name = signal.Signals(signum).name
        for pid in kernels():
            if handles(pid, signum):
                os.kill(pid, signum)
                print(f"labkit: {name}: passed on to the kernel (pid {pid})", flush=True)
            else:
                print(f"labkit: {name}: the kernel (pid {pid}) does not handle it", flush=True)
        print(f"labkit: {name}: this task takes no new run", flush=True)


def run_in_thread(batch_dir: Path, index: int) -> dict[str, Any]:
    """``run_one`` in a thread, the main thread waiting (so that signals reach it)."""
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
        worker.join(0.5)  # wakes for signals
    return outcome


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or "SLURM_ARRAY_TASK_ID" not in os.environ:
        print("usage: python -m labkit.runs.slurm_task BATCH_DIR RUNS (as a SLURM array task)")
        return 2
    batch_dir, indices = Path(args[0]), parse_ranges(args[1])
    job_id, task = os.environ.get("SLURM_ARRAY_JOB_ID", "?"), os.environ["SLURM_ARRAY_TASK_ID"]
    signal.signal(signal.SIGTERM, _leave)
    warning = WalltimeWarning()
    for signum in FORWARDED:
        signal.signal(signum, warning)
    _skip_slow_optional_imports()
    while not warning.given:
        index = claim(batch_dir, job_id, task, indices)
        if index is None:
            break
        outcome = run_in_thread(batch_dir, index)
        outcome["slurm_job_id"] = f"{job_id}_{task}"
        write_json(outcome_path(batch_dir, index), outcome)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcomes are on disk and the kernels shut down: skip the interpreter's teardown of
    # jupyter_client's sockets and loop (up to a second or more), which holds the CPU the
    # next array task is waiting for.
    os._exit(code)
