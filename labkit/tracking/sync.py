"""``labkit tracking sync``: send runs kept locally while their server was unreachable.

Runs in the unsent store (``mlflow-unsent.db`` in the runs folder) carry the server they
were meant for (tag ``labkit.sync_to``). Each is copied whole with MLflow's own client: its
experiment (by name), tags, parameters, every metric's full history, artifacts, status and
times, children after their parents with ``mlflow.parentRunId`` pointing at the copy. A copied
run is tagged ``labkit.synced_as`` with its new id, so a second sync sends nothing twice.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.errors import TrackingError
from labkit.tracking.uri import UNSENT_DB, check_uri, runs_folder, sqlite_uri

SYNCED_TAG = "labkit.synced_as"


@dataclass
class SyncResult:
    source: str
    sent: dict[str, str]  # local run id -> its id on the server
    skipped: int  # runs sent before


def unsent_store(runs_dir: str | os.PathLike | None = None) -> Path:
    return runs_folder(runs_dir) / UNSENT_DB


def sync(runs_dir: str | os.PathLike | None = None, to: str | None = None) -> SyncResult:
    """Send every not-yet-sent run of ``runs_dir``'s unsent store to its server (or ``to``)."""
    from mlflow.tracking import MlflowClient

    from labkit.tracking.client import PARENT_TAG, SYNC_TO_TAG

    db = unsent_store(runs_dir)
    if not db.is_file():
        raise TrackingError(
            f"nothing to sync: {db} does not exist (runs are kept there only while their "
            "tracking server cannot be reached)",
            uri=sqlite_uri(db),
        )
    if to is not None:
        check_uri(to)
    local = MlflowClient(tracking_uri=sqlite_uri(db))
    runs = [
        run
        for experiment in local.search_experiments()
        for run in local.search_runs([experiment.experiment_id], max_results=50000)
        if SYNC_TO_TAG in run.data.tags
    ]
    pending = [run for run in runs if SYNCED_TAG not in run.data.tags]
    by_id = {run.info.run_id: run for run in pending}
    sent: dict[str, str] = {}
    for run in _parents_first(pending, by_id):
        target = to or run.data.tags[SYNC_TO_TAG]
        parent = run.data.tags.get(PARENT_TAG)
        if parent is not None:
            parent = sent.get(parent) or _synced_id(local, parent) or parent
        new_id = _copy(local, MlflowClient(tracking_uri=target), run, parent)
        local.set_tag(run.info.run_id, SYNCED_TAG, new_id)
        sent[run.info.run_id] = new_id
    return SyncResult(sqlite_uri(db), sent, len(runs) - len(pending))


def _parents_first(runs: list[Any], by_id: dict[str, Any]) -> list[Any]:
    from labkit.tracking.client import PARENT_TAG

    ordered: list[Any] = []
    seen: set[str] = set()

    def visit(run: Any) -> None:
        if run.info.run_id in seen:
            return
        seen.add(run.info.run_id)
        parent = by_id.get(run.data.tags.get(PARENT_TAG, ""))
        if parent is not None:
            visit(parent)
        ordered.append(run)

    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        visit(run)
    return ordered


def _synced_id(local: Any, run_id: str) -> str | None:
    try:
        return local.get_run(run_id).data.tags.get(SYNCED_TAG)
    except Exception:
        return None


def _copy(local: Any, remote: Any, run: Any, parent: str | None) -> str:
    from mlflow.entities import Metric, Param, RunTag

    from labkit.tracking.client import PARENT_TAG, SYNC_TO_TAG

    experiment = local.get_experiment(run.info.experiment_id).name
    found = remote.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else remote.create_experiment(experiment)
    tags = {
        key: value
        for key, value in run.data.tags.items()
        if key not in (SYNC_TO_TAG, SYNCED_TAG, PARENT_TAG, "mlflow.runName")
    }
    if parent is not None:
        tags[PARENT_TAG] = parent
    copy = remote.create_run(
        experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
    )
    new_id = copy.info.run_id
    metrics = [
        Metric(point.key, point.value, point.timestamp, point.step)
        for key in run.data.metrics
        for point in local.get_metric_history(run.info.run_id, key)
    ]
    params = [Param(key, value) for key, value in run.data.params.items()]
    for start in range(0, max(len(metrics), 1), 1000):  # MLflow's batch limit
        remote.log_batch(
            new_id,
            metrics=metrics[start : start + 1000],
            params=params if start == 0 else [],
            tags=[RunTag("labkit.synced_from", run.info.run_id)] if start == 0 else [],
        )
    with tempfile.TemporaryDirectory(prefix="labkit-sync-") as scratch:
        if local.list_artifacts(run.info.run_id):
            folder = local.download_artifacts(run.info.run_id, "", scratch)
            remote.log_artifacts(new_id, folder)
    remote.set_terminated(new_id, run.info.status, end_time=run.info.end_time)
    return new_id
