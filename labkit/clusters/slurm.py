"""SLURM as labkit sees it: what a cluster's jobs ask for, and what SLURM says about them.

One home for the SLURM facts every SLURM backend uses: the request (``SlurmOptions``), a
check of it against SLURM before anything runs (``sbatch --test-only``: SLURM's own message
for an unknown partition or an over-large request), job states from ``squeue`` (there may
be no accounting, so a job ``squeue`` no longer lists has ended), submitting a job array, and
the named option sets (profiles) a site offers its users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from labkit.checks import whole
from labkit.errors import ParameterError, SlurmError

# id, state, reason, time left, time limit; with ``--states=all`` it lists jobs that ended
# too, for ``MinJobAge`` seconds (300 by default), with their final state
SQUEUE_FORMAT = "%i|%T|%r|%L|%l"
# the states of a job that has ended (``squeue --states=all`` shows them until it forgets it)
FINAL_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
}
# how a job ended, in words (SLURM's final state -> what happened)
ENDINGS = {
    "COMPLETED": "completed",
    "CANCELLED": "was cancelled",
    "FAILED": "failed",
    "TIMEOUT": "hit its walltime",
    "DEADLINE": "hit its deadline",
    "NODE_FAIL": "lost its node",
    "BOOT_FAIL": "could not boot its node",
    "OUT_OF_MEMORY": "ran out of memory",
    "PREEMPTED": "was preempted",
}
PROFILES_ENV = "LABKIT_SLURM_PROFILES"


@dataclass(frozen=True)
class SlurmOptions:
    """What each job of a SLURM cluster asks for, and how long labkit waits for it.

    ``jobs``: jobs (one worker each); ``cores``/``memory``/``walltime``: per job;
    ``partition``/``account``: SLURM's ``-p``/``-A`` (None: the site's default);
    ``job_extra``: more ``#SBATCH`` options, e.g. ``["--qos=debug"]``; ``prologue``: shell
    lines a job runs before its worker, e.g. ``["module load python"]``; ``interface``: the
    network interface the scheduler and the workers use, one the nodes share, e.g. ``"ib0"``
    (None: dask-jobqueue's configuration, ``jobqueue.slurm.interface``);
    ``startup_timeout``: seconds a *running* job has for its worker to connect (time pending
    in the queue does not count); ``log_directory``: the jobs' output files (default
    ``~/.labkit/slurm``, which the nodes must see).
    """

    jobs: int = 1
    cores: int = 1
    memory: str = "2GiB"
    walltime: str = "00:30:00"
    partition: str | None = None
    account: str | None = None
    job_extra: tuple[str, ...] = field(default_factory=tuple)
    prologue: tuple[str, ...] = field(default_factory=tuple)
    interface: str | None = None
    startup_timeout: float = 300.0
    log_directory: str | None = None

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> SlurmOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            choices = ", ".join(sorted(known))
            raise ParameterError(
                f"unknown SLURM option(s) {', '.join(unknown)}: choose from {choices}"
            )
        lines = {}
        for name in ("job_extra", "prologue"):  # one line, or a list of them
            given = options.get(name) or ()
            lines[name] = (given,) if isinstance(given, str) else tuple(given)
        made = cls(**{**options, **lines})
        whole("jobs", made.jobs, 0)
        whole("cores", made.cores, 1)
        return made

    def sbatch_flags(self) -> list[str]:
        """The request as ``sbatch`` options (what ``check_request`` asks SLURM about)."""
        from dask.utils import parse_bytes

        megabytes = max(1, parse_bytes(self.memory) // 2**20)
        flags = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={self.cores}"]
        flags += [f"--mem={megabytes}M", f"--time={self.walltime}"]
        flags += [f"--partition={self.partition}"] if self.partition else []
        flags += [f"--account={self.account}"] if self.account else []
        return flags + list(self.job_extra)

    def folder(self) -> Path:
        folder = Path(self.log_directory or Path.home() / ".labkit" / "slurm").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@dataclass(frozen=True)
class JobState:
    """One job as ``squeue`` reports it; ``state`` ENDED once it has ended (``ended_as``:
    SLURM's final state while SLURM still remembers the job, else None)."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, ... or ENDED
    reason: str | None  # why it is pending (Resources, Priority...) or ended (TimeLimit...)
    ended_as: str | None = None  # COMPLETED, CANCELLED, FAILED, TIMEOUT, ... once ENDED
    time_left_s: int | None = None  # a running job's seconds to its walltime
    time_limit_s: int | None = None  # its walltime in seconds; None: unlimited

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def ending(self) -> str:
        """How an ENDED job ended, in words: "hit its walltime (TIMEOUT)"."""
        if self.ended_as is None:
            return "ended"
        words = ENDINGS.get(self.ended_as, "ended")
        why = f", {self.reason}" if self.reason and self.ended_as == "FAILED" else ""
        return f"{words} ({self.ended_as}{why})"


def require_slurm() -> None:
    """An error saying SLURM is not available here, unless its commands are on PATH."""
    missing = [tool for tool in ("sbatch", "squeue", "scancel") if shutil.which(tool) is None]
    if missing:
        raise SlurmError(
            f"SLURM is not available on this machine: {', '.join(missing)} not found on PATH "
            "(run this on a login node of a SLURM cluster, or load its module)"
        )


def _slurm(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"`{' '.join(args[:2])}` did not answer within {timeout:g} s") from exc


def check_request(
    options: SlurmOptions, more: list[str] | None = None, *, flags: list[str] | None = None
) -> None:
    """Ask SLURM whether it would run one job of ``options`` (and ``more`` flags, e.g. an
    ``--array``); its own message if not. ``flags``: the job's own request in place of
    ``options.sbatch_flags()`` (a Ray cluster is one job of several tasks)."""
    require_slurm()
    flags = (options.sbatch_flags() if flags is None else flags) + (more or [])
    out = _slurm(["sbatch", "--test-only", *flags, "--wrap", "true"])
    if out.returncode != 0:
        said = " ".join(line.strip() for line in out.stderr.splitlines() if line.strip())
        raise SlurmError(f"SLURM refused the request {' '.join(flags)}: {said}")


def duration_s(text: str) -> int | None:
    """Seconds of a SLURM duration ("45", "5:00", "1:02:03", "2-00:00:00"); None for
    UNLIMITED, NOT_SET, INVALID and the like."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if not all(part.isdigit() for part in parts) or len(parts) > 3 or (days and not days.isdigit()):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def parse_job_line(line: str) -> JobState | None:
    """One line of ``squeue --format=SQUEUE_FORMAT``; None when it is not one."""
    parts = line.strip().split("|")
    if len(parts) != 5:
        return None
    job_id, state, reason, left, limit = parts
    said = None if reason in ("None", "") else reason
    if state in FINAL_STATES:
        # a pending job's last reason (Priority...) says nothing about how it ended
        said = said if state in ("FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL") else None
        return JobState(job_id, "ENDED", said, ended_as=state, time_limit_s=duration_s(limit))
    time_left = duration_s(left) if state == "RUNNING" else None
    return JobState(job_id, state, said, time_left_s=time_left, time_limit_s=duration_s(limit))


def job_states(job_ids: list[str], *, strict: bool = False) -> dict[str, JobState]:
    """The state of each job or array task (``JOB_TASK``), from ``squeue``; a job that
    ended is ENDED, with SLURM's final state while SLURM remembers it. ``strict``: a
    SlurmError when ``squeue`` itself fails (a controller restarting), rather than every
    job read as ENDED."""
    if not job_ids:
        return {}
    out = _slurm(
        ["squeue", "--array", "--states=all", "--noheader", f"--format={SQUEUE_FORMAT}"]
        + [f"--jobs={','.join(job_ids)}"]
    )
    if strict and out.returncode != 0 and "Invalid job id" not in out.stderr:
        raise SlurmError(f"squeue failed: {out.stderr.strip() or out.returncode}")
    listed = {
        state.job_id: state for state in map(parse_job_line, out.stdout.splitlines()) if state
    }
    return {job_id: listed.get(job_id, JobState(job_id, "ENDED", None)) for job_id in job_ids}


class RecentJobStates:
    """``job_states`` asked of squeue at most once per ``ttl`` seconds for the same jobs: one
    sidebar poll reads a cluster's jobs several times (its failure, its queue, its card)."""

    def __init__(self, ttl: float = 1.0):
        self.ttl = ttl
        self._asked: tuple[float, tuple[str, ...], list[JobState]] | None = None

    def __call__(self, job_ids: list[str]) -> list[JobState]:
        now, key = time.monotonic(), tuple(job_ids)
        asked = self._asked
        if asked is None or asked[1] != key or now - asked[0] > self.ttl:
            asked = self._asked = (now, key, list(job_states(job_ids).values()))
        return asked[2]


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """``scancel`` the jobs; one that has already ended is no error."""
    ids = [str(job_id) for job_id in job_ids]
    if ids:
        _slurm(["scancel", *ids])


def output_tail(folder: Path, job_id: str, lines: int = 15) -> str:
    """The last lines of a job's output files in ``folder`` (``*-JOBID.out``/``.err``)."""
    tails = []
    for path in sorted(folder.glob(f"*-{job_id}.*")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        if text:
            tails.append(f"{path}:\n" + "\n".join(text))
    return "\n".join(tails) or f"(no output file for job {job_id} in {folder})"


def array_flag(indices: Iterable[int]) -> str:
    """``--array=`` for ``indices``, consecutive ones as ranges: ``--array=0-3,7``."""
    ordered = sorted(set(indices))
    parts, start = [], None
    for position, index in enumerate(ordered):
        if start is None:
            start = index
        if position + 1 == len(ordered) or ordered[position + 1] != index + 1:
            parts.append(str(start) if start == index else f"{start}-{index}")
            start = None
    return f"--array={','.join(parts)}"


def submit_script(script: Path, flags: list[str], args: Iterable[str] = ()) -> str:
    """``sbatch FLAGS SCRIPT ARGS``; the job id, or SLURM's own message as a SlurmError."""
    require_slurm()
    out = _slurm(["sbatch", "--parsable", *flags, str(script), *args])
    if out.returncode != 0:
        said = " ".join(line.strip() for line in out.stderr.splitlines() if line.strip())
        raise SlurmError(f"SLURM refused {script.name} ({' '.join(flags)}): {said}")
    return out.stdout.strip().split(";")[0]  # "JOBID" or "JOBID;CLUSTER"


def slurm_profiles() -> dict[str, dict[str, Any]]:
    """The site's named SLURM option sets: name -> ``SlurmOptions`` fields.

    Read from the JSON file named by ``$LABKIT_SLURM_PROFILES``, else
    ``~/.labkit/slurm-profiles.json``; none when neither exists. E.g.
    ``{"gpu": {"partition": "gpu", "cores": 8, "job_extra": ["--gres=gpu:1"]}}``.
    """
    path = Path(os.environ.get(PROFILES_ENV) or Path.home() / ".labkit" / "slurm-profiles.json")
    path = path.expanduser()
    if not path.is_file():
        return {}
    try:
        profiles = json.loads(path.read_text())
    except ValueError as exc:
        raise ParameterError(f"cannot read the SLURM profiles in {path}: {exc}") from exc
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ParameterError(f"{path} must map each profile name to its SLURM options")
    return profiles


def profile_options(
    profile: str | None, profiles: dict[str, dict[str, Any]] | None = None, **overrides: Any
) -> SlurmOptions:
    """``SlurmOptions`` of the named profile (None: the defaults), ``overrides`` on top;
    ``profiles``: the set to choose from (default: ``slurm_profiles()``)."""
    chosen: dict[str, Any] = {}
    if profile is not None:
        profiles = slurm_profiles() if profiles is None else profiles
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or f"none (see ${PROFILES_ENV})"
            raise ParameterError(f"no SLURM profile {profile!r}: known profiles are {known}")
        chosen = dict(profiles[profile])
    return SlurmOptions.from_kwargs({**chosen, **overrides})
