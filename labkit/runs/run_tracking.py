"""MLflow runs for ``labkit run`` and ``labkit batch``: one run per execution, a batch's runs
nested under one parent run (MLflow's ``mlflow.parentRunId``).

A run is opened before its notebook is submitted, so its id reaches the kernel as
``MLFLOW_RUN_ID`` (with ``MLFLOW_TRACKING_URI``): ``mlflow.start_run()`` inside the notebook
continues the same run. When the notebook ends, this process logs its numeric
``labkit.record`` values as metrics (those the notebook did not log itself), the executed
notebook as an artifact, and the status (FAILED for a failed run).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.runs.bundle import Bundle
from labkit.runs.results import RunEntry
from labkit.tracking import TrackedRun, Tracker, notebook_tags, open_tracker
from labkit.tracking.ui import reference

_STATUS = {"ok": "FINISHED", "cancelled": "KILLED"}  # failed, lost, timeout: FAILED


def kernel_env(tracked: TrackedRun | None) -> dict[str, str]:
    """What a notebook's kernel needs to log into its own run."""
    if tracked is None:
        return {}
    return {"MLFLOW_TRACKING_URI": tracked.uri, "MLFLOW_RUN_ID": tracked.run_id}


def usable_here(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` unless it names a local tracking database this host cannot see (a worker on
    another machine: this process logs the run's results when it comes back)."""
    from labkit.tracking.uri import sqlite_path

    db = sqlite_path(env.get("MLFLOW_TRACKING_URI", ""))
    return dict(env) if db is None or db.parent.is_dir() else {}


class RunTracking:
    """The MLflow runs of one ``labkit run`` or of one batch (a parent and its children)."""

    def __init__(self, bundle: Bundle, tracker: Tracker | None, parent: TrackedRun | None):
        self.bundle, self.tracker, self.parent = bundle, tracker, parent
        self.lineage = notebook_tags(bundle) if tracker is not None else {}

    @classmethod
    def for_run(cls, bundle: Bundle) -> RunTracking:
        return cls(bundle, open_tracker(experiment=bundle.name), None)

    @classmethod
    def for_batch(cls, bundle: Bundle, grid: Mapping[str, Any], size: int) -> RunTracking:
        tracker = open_tracker(experiment=bundle.name)
        if tracker is None:
            return cls(bundle, None, None)
        tracking = cls(bundle, tracker, None)
        tracking.parent = tracker.start_run(
            name=f"{bundle.name} batch",
            kind="batch",
            params={f"grid.{name}": list(values) for name, values in grid.items()},
            tags={**tracking.lineage, "labkit.batch_size": size},
        )
        return tracking

    @classmethod
    def reopen(cls, bundle: Bundle, uri: str, parent_id: str | None) -> RunTracking:
        """The tracking of a batch that another process started (a SLURM batch's watcher)."""
        from labkit.tracking import Tracker

        tracker = Tracker(uri, experiment=bundle.name)
        parent = TrackedRun(tracker, parent_id) if parent_id is not None else None
        return cls(bundle, tracker, parent)

    def run(self, run_id: str | None) -> TrackedRun | None:
        """The run ``run_id`` of this store, to finish it."""
        if self.tracker is None or run_id is None:
            return None
        return TrackedRun(self.tracker, run_id)

    @property
    def parent_id(self) -> str | None:
        return self.parent.run_id if self.parent is not None else None

    def reference(self, tracked: TrackedRun | None) -> dict[str, str] | None:
        """What result.json / results.json keep of ``tracked`` (its page in the sidebar)."""
        if tracked is None or self.tracker is None:
            return None
        return reference(self.tracker.uri, self.tracker.experiment_id, tracked.run_id)

    def start(self, name: str, parameters: Mapping[str, Any]) -> TrackedRun | None:
        if self.tracker is None:
            return None
        return self.tracker.start_run(
            name=name, kind="run", params=parameters, tags=self.lineage, parent=self.parent
        )

    def finish(self, tracked: TrackedRun | None, entry: RunEntry, notebook: Path | None) -> None:
        """Records as metrics, the executed notebook, the outcome as tags and status."""
        if tracked is None:
            return
        logged = tracked.metric_keys()
        tracked.log(
            metrics={
                name: value
                for name, value in {**entry.records, "duration_s": entry.duration_s}.items()
                if name not in logged
            },
            tags={"labkit.status": entry.status, "labkit.worker_host": entry.worker_host}
            | ({"labkit.error": entry.error[:5000]} if entry.error else {}),
        )
        if notebook is not None and notebook.is_file():
            tracked.log_artifact(notebook)
        tracked.end(_STATUS.get(entry.status, "FAILED"))

    def close(self, summary: Mapping[str, Any], interrupted: bool = False) -> None:
        """End the batch's parent run with its totals as metrics."""
        if self.parent is None:
            return
        self.parent.log_metrics({f"runs_{name}": count for name, count in summary.items()})
        self.parent.end("KILLED" if interrupted else "FINISHED")
