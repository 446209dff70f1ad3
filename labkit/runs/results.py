"""The records a run and a batch write (``result.json``, ``results.json``), defined once.

A run's status is one of ``ok`` and ``failed``; inside a batch a run is also ``pending``
(not finished yet), ``lost`` (its worker died; it is submitted again), ``timeout`` (its SLURM
task hit the walltime; submitted again too) or ``cancelled`` (the batch was interrupted
first). ``BatchResult.runs`` and ``results.json`` hold the JSON form of ``BatchEntry``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RunStatus = Literal["ok", "failed", "pending", "lost", "timeout", "cancelled"]
BatchStatus = Literal["running", "done", "interrupted"]
RUN_STATUSES: tuple[RunStatus, ...] = ("ok", "failed", "lost", "timeout", "pending", "cancelled")


@dataclass
class RunEntry:
    """One execution of a bundle: its parameters, outcome and every ``labkit.record`` value.

    ``notebook`` is the executed notebook's path relative to the run or batch folder, None
    when the kernel never ran.
    """

    parameters: dict[str, Any]
    status: RunStatus
    error: str | None = None
    duration_s: float = 0.0
    worker_host: str | None = None
    records: dict[str, Any] = field(default_factory=dict)
    notebook: str | None = None
    mlflow_run_id: str | None = None  # its MLflow run (None: tracking off)


@dataclass
class BatchEntry(RunEntry):
    """One grid point of a batch: a run entry with its place in the grid and its attempts."""

    index: int = 0
    attempts: int = 0
    slurm_job_id: str | None = None  # "JOB_TASK" of its last attempt, when it ran on SLURM

    def to_json(self) -> dict[str, Any]:
        """The entry as ``results.json`` holds it: ``index`` first."""
        data = asdict(self)
        return {"index": data.pop("index"), **data}


@dataclass
class BatchCluster:
    """The cluster a batch ran on."""

    backend: str
    address: str | None
