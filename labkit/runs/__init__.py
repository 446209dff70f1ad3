"""Frozen, parameterised notebook runs: freeze, run, batch across a cluster, verify.

A bundle (a folder with notebook.ipynb, manifest.json and requirements.lock) runs with plain
papermill too; labkit adds the provenance, the checks on parameters, the grid on a cluster,
and the comparison of recorded values.

nbformat and papermill take most of a second to import, and ``labkit.record`` runs inside
every executed notebook: the modules here import them only inside the functions that need them.
"""

from labkit.runs.batch import BatchResult, batch, expand_grid
from labkit.runs.bundle import Bundle, load_bundle
from labkit.runs.execute import RunResult, run
from labkit.runs.freeze import current_notebook_path, freeze
from labkit.runs.listing import RunsTable, list_runs
from labkit.runs.records import RECORD_MIME, read_records, record
from labkit.runs.slurm_array import batch_status, resume_batch
from labkit.runs.verify import VerifyReport, verify

__all__ = [
    "RECORD_MIME",
    "BatchResult",
    "Bundle",
    "RunResult",
    "RunsTable",
    "VerifyReport",
    "batch",
    "batch_status",
    "current_notebook_path",
    "expand_grid",
    "freeze",
    "list_runs",
    "load_bundle",
    "read_records",
    "record",
    "resume_batch",
    "run",
    "verify",
]
