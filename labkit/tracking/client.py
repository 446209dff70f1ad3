"""``Tracker`` and ``TrackedRun``: MLflow runs for trainings, runs and batches.

labkit talks to MLflow through ``MlflowClient`` with explicit run ids, never through
MLflow's process-wide active run, so a notebook's own ``mlflow.start_run()`` is untouched.
Tracking never stops the work it records: a store that fails mid-run gets one warning and
the run's results stay in labkit's own files. A tracking server that cannot be reached at
the start is replaced by a local store (``mlflow-unsent.db`` in the runs folder), whose runs
``labkit tracking sync`` sends on later.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from labkit.errors import TrackingWarning
from labkit.tracking.uri import (
    UNSENT_DB,
    artifact_root,
    is_server,
    runs_folder,
    sqlite_uri,
    tracking_enabled,
    tracking_uri,
)

EXPERIMENT = "labkit"
KIND_TAG = "labkit.kind"
SYNC_TO_TAG = "labkit.sync_to"  # on runs kept locally: the server they are meant for
PARENT_TAG = "mlflow.parentRunId"
PROBE_TIMEOUT_S = 3.0
_PARAM_CHARS = 6000  # MLflow's limit on a parameter value

# A server that dies mid-run must not hold the work for minutes of retries per call.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # labkit sends nothing anywhere
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # not amid progress bars


class Tracker:
    """One tracking store and experiment; ``start_run`` opens runs in it."""

    def __init__(self, uri: str, experiment: str = EXPERIMENT, sync_to: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri, self.sync_to = uri, sync_to
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment(experiment)

    @classmethod
    def open(
        cls, experiment: str | None = None, runs_dir: str | os.PathLike | None = None
    ) -> Tracker | None:
        """The tracker for ``tracking_uri(runs_dir)``; None when ``LABKIT_TRACKING=off``.

        A tracking server that does not answer within a few seconds gives a warning and a
        tracker on the local unsent store instead.
        """
        if not tracking_enabled():
            return None
        uri = tracking_uri(runs_dir)
        experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        if is_server(uri):
            why = unreachable(uri)
            if why is not None:
                local = sqlite_uri(runs_folder(runs_dir) / UNSENT_DB)
                warnings.warn(
                    f"the tracking server {uri} cannot be reached ({why}); this is tracked in "
                    f"{local} instead, and `labkit tracking sync` sends it there later",
                    TrackingWarning,
                    stacklevel=3,
                )
                return cls(local, experiment, sync_to=uri)
        return cls(uri, experiment)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_root(self.uri))
        except Exception:  # another process created it first
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self,
        name: str,
        kind: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        parent: TrackedRun | None = None,
    ) -> TrackedRun | None:
        """A new run (status RUNNING) with ``params`` and ``tags``; a child of ``parent``.
        None, with a warning, when the store refuses it (the work goes on untracked)."""
        all_tags = {KIND_TAG: kind, **(tags or {})}
        if parent is not None:
            all_tags[PARENT_TAG] = parent.run_id
        if self.sync_to:
            all_tags[SYNC_TO_TAG] = self.sync_to
        try:
            run = self.client.create_run(
                self.experiment_id,
                tags={k: str(v) for k, v in all_tags.items() if v is not None},
                run_name=name,
            )
        except Exception as exc:
            warnings.warn(
                f"tracking is off for {name}: {self.uri} refused a new run "
                f"({type(exc).__name__}: {exc})",
                TrackingWarning,
                stacklevel=2,
            )
            return None
        tracked = TrackedRun(self, run.info.run_id)
        tracked.log_params(params or {})
        return tracked

    def resume_run(self, run_id: str) -> TrackedRun | None:
        """The run ``run_id`` set RUNNING again, or None when this store does not hold it."""
        try:
            self.client.get_run(run_id)
            self.client.update_run(run_id, status="RUNNING")
        except Exception:
            return None
        return TrackedRun(self, run_id)


class TrackedRun:
    """One MLflow run; every call is best-effort (see the module docstring)."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self.failed: str | None = None  # why logging stopped, once it has

    @property
    def uri(self) -> str:
        return self.tracker.uri

    def log(
        self,
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> None:
        """One write: numbers among ``metrics`` at ``step`` (bools, strings and None are
        skipped), ``params`` and ``tags`` (None values skipped)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        metric_items = [
            Metric(metric_key(k), float(v), now, int(step))
            for k, v in (metrics or {}).items()
            if is_number(v)
        ]
        param_items = [
            Param(metric_key(k), str(v)[:_PARAM_CHARS]) for k, v in (params or {}).items()
        ]
        tag_items = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None]
        if metric_items or param_items or tag_items:
            self._call(
                "log to the run",
                lambda c: c.log_batch(
                    self.run_id, metrics=metric_items, params=param_items, tags=tag_items
                ),
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.log(params=params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        self.log(metrics=metrics, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log(tags=tags)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """An epoch's figures (a training's, a trial's) at ``step=record["epoch"]``."""
        self.log(
            metrics={k: v for k, v in record.items() if k != "epoch"}, step=int(record["epoch"])
        )

    def log_artifact(self, path: str | os.PathLike, folder: str | None = None) -> None:
        local = str(path)
        self._call(
            f"store {Path(local).name}", lambda c: c.log_artifact(self.run_id, local, folder)
        )

    def log_text(self, text: str, name: str) -> None:
        self._call(f"store {name}", lambda c: c.log_text(self.run_id, text, name))

    def metric_keys(self) -> set[str]:
        keys: set[str] = set()
        self._call("read the run", lambda c: keys.update(c.get_run(self.run_id).data.metrics))
        return keys

    def end(self, status: str = "FINISHED") -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        self._call("end the run", lambda c: c.set_terminated(self.run_id, status))

    def _call(self, what: str, call: Callable[[Any], Any]) -> None:
        if self.failed is not None:
            return
        try:
            call(self.tracker.client)
        except Exception as exc:  # the store went away or refused: the work goes on
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"tracking run {self.run_id} in {self.uri} stopped: could not {what} "
                f"({self.failed}); the results stay in labkit's own files",
                TrackingWarning,
                stacklevel=3,
            )


def open_tracker(
    experiment: str | None = None, runs_dir: str | os.PathLike | None = None
) -> Tracker | None:
    """``Tracker.open`` that never raises for a store it cannot open (one warning instead)."""
    from labkit.errors import TrackingError

    try:
        return Tracker.open(experiment, runs_dir)
    except TrackingError:
        raise  # a URI that can never work is the user's to fix
    except Exception as exc:
        warnings.warn(
            f"tracking is off for this: the store {tracking_uri(runs_dir)} could not be opened "
            f"({type(exc).__name__}: {exc})",
            TrackingWarning,
            stacklevel=2,
        )
        return None


def unreachable(uri: str) -> str | None:
    """Why the tracking server ``uri`` does not answer, None when it does (any HTTP reply)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # it answered (an auth proxy, an old server without /health)
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is a dependency
            return False
        if not isinstance(value, np.integer | np.floating):
            return False
    return not math.isinf(float(value))  # MLflow keeps NaN, refuses infinities


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in keys replaced by "_"."""
    return re.sub(r"[^\w./\- :]", "_", str(name))[:250] or "_"
