"""A batch as one SLURM job array: the grid's runs shared among its tasks (DESIGN §11).

An array of ``tasks`` tasks (default: as many as the partition's CPUs can run at once)
runs the grid: each task takes the next run nobody has taken yet (a claim file), runs it
with papermill in a fresh kernel, writes its outcome, and takes the next, until none is
left. One Python start and one SLURM scheduling pass thus serve several runs, and a task
that is cancelled loses only the run it was running: the others' runs go on.

The batch folder holds everything there is to know about it, so ``labkit batch --status``
and ``--resume`` work from the folder alone, after the process that submitted it has gone:

- ``slurm.json``: the bundle, each run's parameters, notebook path and MLflow run, the SLURM
  options, the array's width (tasks) and ``--signal``, retries, and every submission (a job
  id, the grid indices it was given and its width);
- ``slurm/task.sh``, the array script (``labkit.runs.slurm_task`` runs the notebooks);
  ``slurm/logs/task-JOB_TASK.out``, each task's output;
- ``slurm/claims/JOB/NNN``, made by the task that took run NNN of job JOB (its task id;
  ``NNN.next``: reserved by a task that starts the run's kernel while its current run goes
  on, which an idle task may still take);
- ``slurm/outcomes/NNN.json``, written by a task when its notebook has ended;
- ``results.json`` and ``runs/NNN-....ipynb``, as every batch writes them, each entry with
  the ``slurm_job_id`` (``JOB_TASK``) of the task that ran its last attempt.

What a run is comes from those files and ``squeue`` (there may be no accounting): an outcome
file means finished (ok, or failed: a failing notebook is not retried); a run whose task
``squeue`` no longer lists and that left no outcome was lost (``scancel``, a node that
died) or, when the task's output says so, hit its walltime (``timeout``); a run no task
took before all of its array's tasks ended was lost too. Those are submitted again as a new
small array of just their indices, up to ``retries`` more times (a run that hit its
walltime: once). Whichever process watches (the submitter, ``--status``, ``--resume``)
logs each finished run to MLflow, once.

Near its walltime a task gets ``--signal`` (default ``B:USR1@120``: SIGUSR1 two minutes
before): it passes the signal on to the running notebook's kernel if that kernel handles it
(``labkit.vae.train`` then checkpoints at once) and takes no new run.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit.checks import whole
from labkit.clusters.slurm import (
    JobState,
    SlurmOptions,
    array_flag,
    check_request,
    job_states,
    profile_options,
    submit_script,
)
from labkit.clusters.where import this_host
from labkit.errors import BundleError, SlurmError
from labkit.log import logger
from labkit.runs.batch import RUNS_FOLDER, BatchResult, expand_grid, run_slug, save_results
from labkit.runs.bundle import Bundle, now_iso, write_json
from labkit.runs.execute import result_entry
from labkit.runs.results import BatchCluster, BatchEntry, BatchStatus
from labkit.runs.run_tracking import RunTracking, kernel_env

STATE = "slurm.json"
FOLDER = "slurm"
SCRIPT = "task.sh"
POLL_S = 0.2  # outcome files: cheap
SQUEUE_EVERY_S = 2.0  # squeue: one request to the controller each time
SAVE_EVERY_S = 2.0
TIME_LIMIT = "DUE TO TIME LIMIT"  # slurmstepd's words for a task killed at its walltime
FINISHED = ("ok", "failed")
DEFAULT_SIGNAL = "B:USR1@120"  # SIGUSR1 to the task's own process 2 minutes before walltime


def outcome_path(batch_dir: Path, index: int) -> Path:
    return Path(batch_dir) / FOLDER / "outcomes" / f"{index:03d}.json"


def claim_path(batch_dir: Path, job_id: str, index: int) -> Path:
    """Made (holding its task id) by the task of array ``job_id`` that took run ``index``."""
    return Path(batch_dir) / FOLDER / "claims" / job_id / f"{index:03d}"


def index_ranges(indices: list[int]) -> str:
    """``0-3,7`` for [0, 1, 2, 3, 7] (``parse_ranges`` reads it back)."""
    return array_flag(indices).partition("=")[2]


def parse_ranges(text: str) -> list[int]:
    indices = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        indices.extend(range(int(first), int(last or first) + 1))
    return indices


def signal_flags(spec: str | None) -> list[str]:
    """``sbatch --signal`` for ``spec`` (e.g. ``B:USR1@120``); none when ``spec`` is empty."""
    return [f"--signal={spec}"] if spec else []


def array_width(tasks: int | None, options: SlurmOptions, runs: int) -> int:
    """How many array tasks share ``runs`` runs: ``tasks`` if given, else as many as the
    partition's CPUs can run at once (each task asking ``options.cores``)."""
    tasks = _slots(options) if tasks is None else whole("tasks", tasks, 1)
    return max(1, min(tasks, runs))


def _slots(options: SlurmOptions) -> int:
    """Tasks of ``options.cores`` CPUs the partition's usable CPUs hold at once (``sinfo``);
    a very large number when SLURM does not say."""
    try:
        out = subprocess.run(
            ["sinfo", "--noheader", "--format=%P|%C"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return sys.maxsize
    for line in out.splitlines():
        name, _, cpus = line.strip().partition("|")
        default = name.endswith("*")
        if name.rstrip("*") == options.partition or (options.partition is None and default):
            _, _, other, total = (int(n) for n in cpus.split("/"))
            return max(1, (total - other) // options.cores)
    return sys.maxsize


def read_state(batch_dir: str | Path) -> dict[str, Any]:
    """``slurm.json`` of a batch folder; a BundleError naming the folder otherwise."""
    path = Path(batch_dir) / STATE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{batch_dir} is not a SLURM batch folder: cannot read {STATE} ({exc})",
            path=str(batch_dir),
        ) from exc


def submit_array(
    bundle: Bundle,
    grid: Mapping[str, list[Any]],
    profile: str | None,
    overrides: Mapping[str, Any],
    retries: int,
    out_dir: Path,
    progress: bool,
) -> BatchResult:
    """Submit every grid point as one job array and wait for it (``labkit.runs.batch``).

    SLURM checks the request first (``sbatch --test-only``): an unknown partition or a
    request no node can meet is SLURM's own message, before anything is written or queued.
    Ctrl-C while waiting leaves the array running (the runs are SLURM's now, and results
    land in the folder): the message says how to follow it with ``labkit batch --status``
    or ``--resume``, or to cancel it with ``scancel``.
    """
    settings = dict(overrides)
    tasks, spec = settings.pop("tasks", None), settings.pop("signal", DEFAULT_SIGNAL)
    options = profile_options(profile, **settings)
    combos = expand_grid(grid)
    width = array_width(tasks, options, len(combos))
    check_request(options, [*signal_flags(spec), array_flag(range(width))])  # MaxArraySize too
    for sub in ("logs", "outcomes", "logged"):
        (out_dir / FOLDER / sub).mkdir(parents=True, exist_ok=True)
    (out_dir / RUNS_FOLDER).mkdir(exist_ok=True)
    tracking = RunTracking.for_batch(bundle, grid, len(combos))
    tasks = []
    for index, parameters in enumerate(combos):
        slug = run_slug(index, parameters)
        tracked = tracking.start(slug, parameters)
        tasks.append(
            {
                "parameters": parameters,
                "notebook": f"{RUNS_FOLDER}/{slug}.ipynb",
                "env": kernel_env(tracked),
                "mlflow_run_id": tracked.run_id if tracked is not None else None,
            }
        )
    tracker = tracking.tracker
    state = {
        "bundle": str(bundle.path),
        "name": bundle.name,
        "created": now_iso(),
        "grid": dict(grid),
        "retries": retries,
        "profile": profile,
        "options": asdict(options),
        "width": width,
        "signal": spec,
        "mlflow": {
            "uri": tracker.uri,
            "parent": tracking.parent_id,
            "reference": tracking.reference(tracking.parent),  # results.json's, kept here
        }
        if tracker
        else None,
        "tasks": tasks,
        "rounds": [],
    }
    (out_dir / FOLDER / SCRIPT).write_text(_script(out_dir, options))
    write_json(out_dir / STATE, state)
    watch = ArrayWatch(out_dir, state, tracking)
    with watch.watching():
        watch.submit(list(range(len(combos))))
        return watch.wait(progress)


def _script(batch_dir: Path, options: SlurmOptions) -> str:
    """The array script: the site's prologue lines, then this Python runs the task (its
    argument: the grid indices the array shares, e.g. ``0-7``)."""
    run = [sys.executable, "-m", "labkit.runs.slurm_task", str(batch_dir.resolve())]
    return "\n".join(
        [
            "#!/bin/bash",
            "# labkit batch: each array task runs grid points nobody has taken yet, in turn",
            *options.prologue,
            "exec " + shlex.join(run) + ' "$@"',
            "",
        ]
    )


@dataclass
class ArrayStatus:
    """A SLURM batch as ``--status`` reports it: the results, and each unfinished run's
    place in SLURM's queue."""

    result: BatchResult
    queue: dict[int, JobState]

    def lines(self) -> list[str]:
        summary = self.result.summary
        counts = ", ".join(
            f"{v} {k}" for k, v in summary.items() if k not in ("total", "duration_s") and v
        )
        out = [f"{self.result.path}: {summary['total']} runs on SLURM: {counts}"]
        for run in self.result.runs:
            index, where = run["index"], run.get("slurm_job_id") or "never submitted"
            if run["status"] == "pending" and index in self.queue:
                state = self.queue[index]
                reason = f" ({state.reason})" if state.reason else ""
                out.append(f"  run {index} {run['parameters']}: {state.state}{reason} as {where}")
            elif run["status"] not in ("ok", "pending"):
                out.append(f"  run {index} {run['parameters']}: {run['status']}: {run['error']}")
        if any(run["status"] in ("lost", "timeout") for run in self.result.runs):
            out.append(f"  `labkit batch --resume {self.result.path}` submits those again")
        return out


def batch_status(batch_dir: str | Path) -> ArrayStatus:
    """Where each run of a SLURM batch stands, from its folder and ``squeue``; records the
    runs that finished meanwhile (results.json, MLflow). Submits nothing."""
    watch = ArrayWatch(Path(batch_dir))
    watch.collect(ask_slurm=True)
    if watch.settled():
        result = watch.close()
    else:
        status: BatchStatus = "running" if watch.in_flight() else "interrupted"
        result = watch.result(watch.save(status))
    return ArrayStatus(result, dict(watch.queue))


def resume_batch(batch_dir: str | Path, progress: bool = True) -> BatchResult:
    """Submit again the runs of a SLURM batch that were lost, timed out or never submitted
    (each with the batch's retries afresh), and wait for every run, as the submitter would."""
    watch = ArrayWatch(Path(batch_dir))
    with watch.watching():
        watch.collect(ask_slurm=True)
        watch.rerun_after_timeout.clear()  # the user asks for them: another walltime each
        for index in watch.retriable(fresh=True):
            watch.limit[index] = watch.entries[index].attempts + 1 + watch.state["retries"]
        return watch.wait(progress)


class ArrayWatch:
    """One SLURM batch seen from its folder: its entries, submissions and resubmissions."""

    def __init__(
        self,
        batch_dir: Path,
        state: dict[str, Any] | None = None,
        tracking: RunTracking | None = None,
    ):
        self.dir = batch_dir
        self.state = state if state is not None else read_state(batch_dir)
        self._tracking = tracking  # opened when a run is to be logged (mlflow is slow to import)
        tasks = self.state["tasks"]
        self.limit = [self.state["retries"] + 1] * len(tasks)  # attempts each run may have
        self.queue: dict[int, JobState] = {}  # unfinished runs as squeue last saw them
        self.round_of: dict[int, dict[str, Any]] = {}  # each run's latest submission
        self.rerun_after_timeout: set[int] = set()  # runs already resubmitted after a timeout
        self.entries = [
            BatchEntry(
                parameters=task["parameters"],
                status="pending",
                index=index,
                mlflow_run_id=task["mlflow_run_id"],
            )
            for index, task in enumerate(tasks)
        ]
        for round_ in self.state["rounds"]:
            self._submitted(round_)

    @property
    def tracking(self) -> RunTracking:
        if self._tracking is None:
            self._tracking = self._reopen_tracking()
        return self._tracking

    def _reopen_tracking(self) -> RunTracking:
        bundle = Bundle(Path(self.state["bundle"]), {"name": self.state["name"]})
        mlflow = self.state.get("mlflow")
        if not mlflow:
            return RunTracking(bundle, None, None)
        try:
            return RunTracking.reopen(bundle, mlflow["uri"], mlflow["parent"])
        except Exception as exc:  # the store is gone or down: the results still count
            logger.warning("batch %s: MLflow store %s: %s", self.dir, mlflow["uri"], exc)
            return RunTracking(bundle, None, None)

    # -- submissions ------------------------------------------------------------------------

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Be the one process that submits for this batch (a lock in its folder)."""
        with open(self.dir / FOLDER / "watch.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                raise SlurmError(
                    f"another process ({lock.read().strip() or '?'}) is watching the batch "
                    f"{self.dir}; `labkit batch --status {self.dir}` shows where it stands"
                ) from None
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on {this_host()}")
            lock.flush()
            yield

    def submit(self, indices: list[int]) -> str:
        """Submit ``indices`` as one array; record the submission before anything else."""
        options = SlurmOptions.from_kwargs(self.state["options"])
        width = min(len(indices), self.state["width"])
        flags = [
            f"--job-name=labkit-{self.state['name']}",
            f"--output={self.dir.resolve() / FOLDER / 'logs' / 'task-%A_%a.out'}",
            f"--chdir={self.dir.resolve()}",
            *options.sbatch_flags(),
            *signal_flags(self.state["signal"]),
            array_flag(range(width)),
        ]
        job_id = submit_script(self.dir / FOLDER / SCRIPT, flags, [index_ranges(indices)])
        round_ = {
            "job_id": job_id,
            "indices": indices,
            "width": width,
            "submitted": now_iso(),
            "timed_out": [i for i in indices if self.entries[i].status == "timeout"],
        }
        self.state["rounds"].append(round_)
        write_json(self.dir / STATE, self.state)
        self._submitted(round_)
        return job_id

    def _submitted(self, round_: Mapping[str, Any]) -> None:
        """The runs of one submission: pending again, one attempt more, in its array (the
        task that runs each is known once it has taken it)."""
        for index in round_["indices"]:
            entry = self.entries[index]
            entry.status, entry.error = "pending", None
            entry.attempts += 1
            entry.slurm_job_id = round_["job_id"]
            self.round_of[index] = round_
        self.rerun_after_timeout.update(round_.get("timed_out", ()))

    # -- what each run is -------------------------------------------------------------------

    def collect(self, ask_slurm: bool) -> None:
        """Read new outcome files; with ``ask_slurm``, also which tasks ended without one.

        ``squeue`` is asked before the files are read: a task it no longer lists has written
        its outcome already, if it ever will."""
        states = None
        if ask_slurm:
            try:
                states = job_states(self._live_tasks(), strict=True)
            except SlurmError as exc:  # a controller restarting: ask again next time
                logger.warning("batch %s: %s", self.dir, exc)
        for index, entry in enumerate(self.entries):
            if entry.status in FINISHED:
                continue
            path = outcome_path(self.dir, index)
            if path.is_file():
                self._finish(index, json.loads(path.read_text()))
            elif states is not None:
                self._place(index, states)

    def _live_tasks(self) -> list[str]:
        """Every task of the arrays that unfinished runs were last submitted in."""
        rounds = {
            round_["job_id"]: round_
            for index, round_ in self.round_of.items()
            if self.entries[index].status not in FINISHED
        }
        return [
            f"{job}_{task}" for job, round_ in rounds.items() for task in range(round_["width"])
        ]

    def _place(self, index: int, states: dict[str, JobState]) -> None:
        entry = self.entries[index]
        round_ = self.round_of.get(index)
        if round_ is None:
            entry.status, entry.error = "lost", "never submitted (its submitter ended first)"
            return
        try:  # the task that took it
            taker = claim_path(self.dir, round_["job_id"], index).read_text().strip()
        except FileNotFoundError:
            self._place_untaken(index, round_, states)
            return
        task_id = entry.slurm_job_id = f"{round_['job_id']}_{taker}"
        state = states.get(task_id)
        if state is None:
            return
        if state.state != "ENDED":
            entry.status = "pending"
            self.queue[index] = state
            return
        self.queue.pop(index, None)
        log = self.dir / FOLDER / "logs" / f"task-{task_id}.out"
        said = log.read_text(errors="replace") if log.is_file() else ""
        timed_out = TIME_LIMIT in said or state.ended_as == "TIMEOUT"
        entry.status = "timeout" if timed_out else "lost"
        last = [line.strip() for line in said.splitlines() if line.strip()][-1:]
        entry.error = f"SLURM task {task_id} ended without a result: {(last or ['no output'])[0]}"

    def _place_untaken(self, index: int, round_: dict[str, Any], states: dict[str, JobState]):
        """A run no task has taken yet: waiting while its array has tasks left, else lost."""
        job = round_["job_id"]
        left = [states.get(f"{job}_{task}") for task in range(round_["width"])]
        left = [state for state in left if state is None or state.state != "ENDED"]
        entry = self.entries[index]
        if left:
            entry.status = "pending"
            self.queue[index] = JobState(job, "WAITING", _waiting_for(left))
            return
        self.queue.pop(index, None)
        entry.status = "lost"
        entry.error = f"never started: every task of SLURM job {job} ended before its turn"

    def _finish(self, index: int, outcome: Mapping[str, Any]) -> None:
        self.queue.pop(index, None)
        task = self.state["tasks"][index]
        finished = result_entry(outcome, task["parameters"], outcome.get("notebook"))
        finished.mlflow_run_id = task["mlflow_run_id"]
        self.entries[index] = BatchEntry(
            **asdict(finished),
            index=index,
            attempts=self.entries[index].attempts,
            slurm_job_id=outcome.get("slurm_job_id"),
        )
        notebook = self.dir / finished.notebook if finished.notebook else None
        self._log_once(
            f"{index}.{self.entries[index].attempts}",
            lambda: self.tracking.finish(
                self.tracking.run(finished.mlflow_run_id), finished, notebook
            ),
        )

    def _log_once(self, name: str, log: Callable[[], None]) -> None:
        """MLflow hears of each attempt's end once, whichever process watched it end."""
        try:
            (self.dir / FOLDER / "logged" / name).open("x").close()
        except FileExistsError:
            return
        log()

    def retriable(self, fresh: bool = False) -> list[int]:
        """Runs lost or timed out with attempts left (``fresh``: whatever their attempts); a
        run that timed out again after its rerun is not one: it would hit its walltime again."""
        return [
            index
            for index, entry in enumerate(self.entries)
            if entry.status in ("lost", "timeout")
            and (fresh or entry.attempts < self.limit[index])
            and not (entry.status == "timeout" and index in self.rerun_after_timeout)
        ]

    def in_flight(self) -> bool:
        return any(entry.status == "pending" for entry in self.entries)

    def settled(self) -> bool:
        return not self.in_flight() and not self.retriable()

    # -- waiting and recording --------------------------------------------------------------

    def wait(self, progress: bool) -> BatchResult:
        """Resubmit what is lost, record what ends, until every run is settled."""
        from tqdm.auto import tqdm

        jobs = ", ".join(round_["job_id"] for round_ in self.state["rounds"])
        desc = f"batch {self.state['name']} on SLURM (job {jobs})"
        asked = saved = float("-inf")
        with tqdm(total=len(self.entries), desc=desc, unit="run", disable=not progress) as bar:
            try:
                while True:
                    now = time.monotonic()
                    ask = now - asked >= SQUEUE_EVERY_S
                    asked = now if ask else asked
                    self.collect(ask_slurm=ask)
                    again = self.retriable()
                    if again:
                        lost = ", ".join(str(self.entries[i].slurm_job_id) for i in again)
                        job_id = self.submit(again)
                        bar.write(
                            f"labkit: SLURM task(s) {lost} ended without a result; "
                            f"submitted again as job {job_id}",
                            file=sys.stderr,
                        )
                    self._show(bar)
                    if self.settled():
                        break
                    if now - saved >= SAVE_EVERY_S:
                        self.save("running")
                        saved = now
                    time.sleep(POLL_S)
            except KeyboardInterrupt:
                self.save("running")
                jobs = ", ".join(round_["job_id"] for round_ in self.state["rounds"])
                bar.write(
                    f"labkit: the SLURM array keeps running (job {jobs}); "
                    f"`labkit batch --status {self.dir}` shows it, "
                    f"`labkit batch --resume {self.dir}` waits for it and submits lost runs "
                    f"again, `scancel {jobs.replace(', ', ' ')}` cancels it",
                    file=sys.stderr,
                )
                raise
        return self.close()

    def _show(self, bar: Any) -> None:
        again = set(self.retriable())
        done = sum(e.status != "pending" and e.index not in again for e in self.entries)
        bar.update(done - bar.n)
        running = sum(s.state in ("RUNNING", "COMPLETING") for s in self.queue.values())
        waiting = [s for s in self.queue.values() if s.state in ("PENDING", "WAITING")]
        reasons = sorted({s.reason for s in waiting if s.reason and s.state == "PENDING"})
        text = f"{running} running, {len(waiting)} waiting"
        text += f" ({', '.join(reasons)})" if reasons else ""
        failed = sum(e.status == "failed" for e in self.entries)
        bar.set_postfix_str(text + (f", {failed} failed" if failed else ""))

    def close(self) -> BatchResult:
        """Every run settled: the lost ones and the batch itself to MLflow, results.json."""
        for index, entry in enumerate(self.entries):
            if entry.status in ("lost", "timeout"):
                self._log_once(
                    f"{index}.{entry.attempts}",
                    lambda e=entry: self.tracking.finish(
                        self.tracking.run(e.mlflow_run_id), e, None
                    ),
                )
        summary = self.save("done")
        rounds = len(self.state["rounds"])  # a batch resumed later is closed again
        self._log_once(f"batch.{rounds}", lambda: self.tracking.close(summary))
        return self.result(summary)

    def save(self, status: BatchStatus) -> dict[str, Any]:
        header = {
            "bundle": self.state["bundle"],
            "name": self.state["name"],
            "created": self.state["created"],
            "cluster": asdict(BatchCluster("slurm", None)),
            "grid": self.state["grid"],
            "retries": self.state["retries"],
            "mlflow": (self.state.get("mlflow") or {}).get("reference"),
            "slurm": {
                "profile": self.state["profile"],
                "jobs": [round_["job_id"] for round_ in self.state["rounds"]],
            },
        }
        started = datetime.fromisoformat(self.state["created"])
        duration = (datetime.now(UTC) - started).total_seconds()
        return save_results(self.dir, header, self.entries, status, duration)

    def result(self, summary: dict[str, Any]) -> BatchResult:
        return BatchResult(self.dir, [entry.to_json() for entry in self.entries], summary)


def _waiting_for(tasks: list[JobState | None]) -> str:
    """Why a run no task has taken yet waits: its array's tasks, running or pending."""
    running = sum(task is not None and task.state != "PENDING" for task in tasks)
    pending = [task for task in tasks if task is not None and task.state == "PENDING"]
    text = f"for a task of its array: {running} running"
    if pending:
        reasons = sorted({task.reason for task in pending if task.reason})
        text += f", {len(pending)} pending" + (f" ({', '.join(reasons)})" if reasons else "")
    return text
