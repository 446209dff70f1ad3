"""One task of a batch's SLURM job array: ``python -m labkit.runs.slurm_task BATCH_DIR RUNS``.

SLURM starts this once per array task, on whichever node; ``RUNS`` (e.g. ``0-7``) are the
grid indices the array's tasks share (``slurm.json`` in the batch folder holds their
parameters). The task takes the next run no other task has taken (a claim file made with
``os.link``, atomic on shared filesystems too), runs its notebook with ``execute_task`` in
the bundle's source folder as every batch does, writes the executed notebook where
``results.json`` points and then, last, the run's outcome file; then it takes the next
run, until none is left. A run that left no outcome never finished
(``labkit.runs.slurm_array`` reads it as lost or timed out, and submits it again). Every run
has a fresh kernel of its own, but the next run's kernel starts while one runs (the task
takes that run a little early), and a finished run's kernel shuts down while the next one
runs: a task spends its time on notebooks, not waiting for kernels.

Each notebook runs in a thread so that SIGTERM (``scancel``, the walltime) stays with this
process: it then exits at once and writes nothing. In the main thread nbclient would catch
the signal itself, shut the kernel down and report the run as a failed notebook, which is
never retried. The kernel, whose parent this was, ends by itself (ipykernel watches its
parent process).

SIGUSR1 or SIGUSR2 (``sbatch --signal=B:USR1@SECONDS``: the walltime is near) is passed on
to the running kernel when that kernel handles the signal (``labkit.vae.train`` checkpoints
on SIGUSR1; a kernel that does not handle it would die of it), and the task starts no new
run: it gives the run it had taken early back, for the array's other tasks or the next
submission.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from labkit.clusters.where import this_host
from labkit.runs.bundle import load_bundle, write_json
from labkit.runs.execute import execute_task, make_task
from labkit.runs.kernel_env import kernel_manager_with_env
from labkit.runs.run_tracking import usable_here
from labkit.runs.slurm_array import claim_path, outcome_path, parse_ranges, read_state

FORWARDED = (signal.SIGUSR1, signal.SIGUSR2)
HISTORY = ["--HistoryManager.hist_file=:memory:"]  # as nbclient starts a kernel
STOP_WAIT_S = 30.0  # for the last kernels to shut down before the task ends
STUCK_S = 30.0  # a run reserved this long waits behind a long run: an idle task takes it
RESERVER = f"{socket.gethostname()} {os.getpid()}"  # what a reservation holds
IDLE_POLL_S = 0.2


@dataclass
class Run:
    """A run this task has taken; ``kernel``: its kernel manager once started (None when it
    could not be started beforehand: papermill then starts one, and says why not)."""

    index: int
    task: dict[str, Any]
    kernel: Future


class TaskRuns:
    """The runs this task takes, one after another: the next run's kernel starts while one
    runs, and a kernel whose run has ended shuts down while the next one runs."""

    def __init__(self, batch_dir: Path, job_id: str, task: str, indices: list[int]):
        self.dir, self.job_id, self.task, self.indices = batch_dir, job_id, task, indices
        self.state = read_state(batch_dir)
        self.bundle = load_bundle(self.state["bundle"])
        self.starting = ThreadPoolExecutor(1, thread_name_prefix="labkit-kernel-start")
        self.stopping: list[threading.Thread] = []

    def take(self, steal: bool) -> Run | None:
        """Reserve a run (``reserve``) and start its kernel; None when none is left."""
        index = reserve(self.dir, self.job_id, self.task, self.indices, steal)
        if index is None:
            return None
        planned = self.state["tasks"][index]
        task = make_task(self.bundle, planned["parameters"], index)
        task["source"] = str(self.bundle.notebook_path)
        task["env"] = planned["env"]
        return Run(index, task, self.starting.submit(start_kernel, task))

    def take_when_idle(self, stopped: Callable[[], bool]) -> Run | None:
        """This task has nothing to run: a free run, or one another task reserved over
        ``STUCK_S`` ago and has not started; waits while reserved runs may yet start; None
        when every run has started (or ``stopped()``)."""
        while not stopped():
            run = self.take(steal=True)
            if run is not None or not reserved_runs(self.dir, self.job_id, self.indices):
                return run
            time.sleep(IDLE_POLL_S)
        return None

    def own(self, run: Run) -> bool:
        """Take a reserved run for good, to start it now; False if another task has."""
        taken = claim_path(self.dir, self.job_id, run.index)
        return _link(self.task, taken) or taken.read_text() == self.task

    def release(self, run: Run) -> None:
        """Give a run reserved (or taken) but not started back to the array's other tasks."""
        taken = claim_path(self.dir, self.job_id, run.index)
        if taken.is_file() and taken.read_text() == self.task:
            taken.unlink()
        _reserved(taken).unlink(missing_ok=True)
        self.shut_down(result_of(run.kernel))

    def execute(self, run: Run, km: Any) -> dict[str, Any]:
        """Execute ``run`` in ``km``'s kernel; its outcome, the notebook's path in it."""
        planned = self.state["tasks"][run.index]
        outcome = execute_task(run.task, km=km)
        text = outcome.pop("notebook")
        outcome["notebook"] = None
        if text is not None:
            (self.dir / planned["notebook"]).write_text(text)
            outcome["notebook"] = planned["notebook"]
        return outcome

    def shut_down(self, km: Any) -> None:
        if km is not None:
            stopping = threading.Thread(target=stop_kernel, args=(km,), daemon=True)
            stopping.start()
            self.stopping.append(stopping)

    def close(self) -> None:
        """Wait for the kernels to shut down (their notebooks' atexit handlers included)."""
        self.starting.shutdown()
        for stopping in self.stopping:
            stopping.join(STOP_WAIT_S)


def reserve(batch_dir: Path, job_id: str, task: str, indices: list[int], steal: bool) -> int | None:
    """A run for this task: the first of ``indices`` that no task has taken or reserved,
    reserved now (``NNN.next``), else (``steal``: this task is idle) the first that another
    task reserved over ``STUCK_S`` ago and has not started, taken now (``NNN``: whoever
    makes it runs the run); None when there is none."""
    claims = [claim_path(batch_dir, job_id, index) for index in indices]
    claims[0].parent.mkdir(parents=True, exist_ok=True)
    for index, taken in zip(indices, claims, strict=True):
        if not taken.exists() and _link(RESERVER, _reserved(taken)):
            return index
    for index, taken in zip(indices, claims, strict=True):
        if steal and _stuck(taken) and _link(task, taken):
            return index
    return None


def reserved_runs(batch_dir: Path, job_id: str, indices: list[int]) -> bool:
    """Whether some run is reserved by a task but not started yet."""
    claims = (claim_path(batch_dir, job_id, index) for index in indices)
    return any(_reserved(taken).exists() and not taken.exists() for taken in claims)


def _stuck(taken: Path) -> bool:
    """A reservation over ``STUCK_S`` old, or one by a task on this host that has ended."""
    try:
        host, pid = _reserved(taken).read_text().split()
        age = time.time() - _reserved(taken).stat().st_mtime
    except (FileNotFoundError, ValueError):
        return False
    return age > STUCK_S or (host == socket.gethostname() and not psutil.pid_exists(int(pid)))


def _reserved(taken: Path) -> Path:
    return taken.with_name(taken.name + ".next")


def _link(task: str, path: Path) -> bool:
    """Make ``path``, holding ``task``, unless it exists (``os.link``: atomic on NFS too)."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".task-") as mine:
        mine.write(task)
        mine.flush()
        try:
            os.link(mine.name, path)
        except FileExistsError:
            return False
    return True


def kernel_name(task: dict[str, Any]) -> str:
    import nbformat

    spec = nbformat.reads(task["notebook"], as_version=4).metadata.get("kernelspec", {})
    return task.get("kernel") or spec.get("name") or "python3"


def start_kernel(task: dict[str, Any]) -> Any:
    """A started kernel for ``task`` (its env, in its working folder) as papermill would
    start it; None when it cannot start."""
    from jupyter_core.utils import run_sync

    try:
        manager = kernel_manager_with_env(usable_here(task.get("env") or {}))
        km = manager(kernel_name=kernel_name(task))
        run_sync(km.start_kernel)(cwd=task["working_dir"], extra_arguments=HISTORY)
    except Exception as exc:
        print(f"labkit: run {task['index']}: no kernel started beforehand: {exc}", flush=True)
        return None
    return km


def stop_kernel(km: Any) -> None:
    from jupyter_core.utils import run_sync

    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=False)
    except Exception as exc:  # gone already: nothing to stop
        print(f"labkit: shutting a kernel down: {exc}", flush=True)


def result_of(kernel: Future) -> Any:
    """A starting kernel's manager, waited for in steps (so that signals reach this thread)."""
    while True:
        try:
            return kernel.result(timeout=0.5)
        except TimeoutError:
            continue


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


def kernel_pid(km: Any) -> int | None:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


class WalltimeWarning:
    """SLURM's warning that the walltime is near: passed on to the running kernel (``km``,
    when it handles the signal); the task starts no new run."""

    def __init__(self) -> None:
        self.given = False
        self.km: Any = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.given = True
        name = signal.Signals(signum).name
        pid = kernel_pid(self.km)
        if pid is not None and handles(pid, signum):
            os.kill(pid, signum)
            print(f"labkit: {name}: passed on to the kernel (pid {pid})", flush=True)
        else:
            print(f"labkit: {name}: the running kernel does not handle it", flush=True)
        print(f"labkit: {name}: this task starts no new run", flush=True)


def run_in_thread(runs: TaskRuns, run: Run, km: Any) -> dict[str, Any]:
    """``runs.execute`` in a thread, the main thread waiting (so that signals reach it)."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome.update(runs.execute(run, km))
        except Exception as exc:  # a bundle gone, a folder it cannot write: the run failed
            outcome.update(
                index=run.index,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                worker_host=this_host(),
                records={},
                notebook=None,
            )

    worker = threading.Thread(target=work, name=f"labkit-run-{run.index}", daemon=True)
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
    runs = TaskRuns(batch_dir, job_id, task, indices)
    upcoming = runs.take_when_idle(lambda: warning.given)
    import papermill  # noqa: F401  (execute_task's; imported while the first kernel starts)

    while upcoming is not None and not warning.given:
        run, km = upcoming, result_of(upcoming.kernel)
        owned = runs.own(run)  # False: an idle task of the array took it meanwhile
        upcoming = runs.take(steal=False)  # the next free run: its kernel starts meanwhile
        if owned:
            warning.km = km
            outcome = run_in_thread(runs, run, km)
            outcome["slurm_job_id"] = f"{job_id}_{task}"
            write_json(outcome_path(batch_dir, run.index), outcome)
        runs.shut_down(km)
        if upcoming is None:
            upcoming = runs.take_when_idle(lambda: warning.given)
    if upcoming is not None:
        runs.release(upcoming)
    runs.close()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The outcomes are on disk and the kernels shut down: skip the interpreter's teardown of
    # jupyter_client's sockets and loop (up to a second or more), which holds the CPU the
    # next array task is waiting for.
    os._exit(code)
