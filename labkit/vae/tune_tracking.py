"""A sweep's MLflow runs: one parent (``labkit.kind=tune``) and one child per trial.

This process logs them from Ray Tune's callbacks, as it logs a training from its epoch
reports: trials never open the tracking store themselves, so trials on other hosts need not
see it and one writer serves them all. The ids live in ``TRACKING_FILE`` in the sweep's folder,
so a restored sweep goes on logging into the same runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.tracking import TrackedRun, Tracker
from labkit.tracking.ui import reference

TRACKING_FILE = "labkit-tracking.json"
REPORTED = ("epoch", "loss", "val_loss")  # what every trial reports to Tune each epoch


class SweepTracking:
    def __init__(self, tracker: Tracker | None, folder: Path):
        self.tracker, self.folder = tracker, folder
        self.parent: TrackedRun | None = None
        self.trials: dict[str, TrackedRun] = {}

    @property
    def parent_id(self) -> str | None:
        return self.parent.run_id if self.parent is not None else None

    def reference(self) -> dict[str, str] | None:
        if self.parent is None:
            return None
        return reference(self.tracker.uri, self.tracker.experiment_id, self.parent.run_id)

    def open(self, name: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> None:
        """The sweep's parent run: the one this folder's earlier start opened, else a new one."""
        if self.tracker is None:
            return
        saved = self._saved()  # only a restored sweep's folder has one (see tune)
        if saved.get("uri") == self.tracker.uri:
            self.parent = self.tracker.resume_run(saved["run_id"])
            for trial, run_id in saved.get("trials", {}).items():
                self.trials[trial] = TrackedRun(self.tracker, run_id)
        if self.parent is None:
            self.parent = self.tracker.start_run(name, "tune", params=params, tags=tags)
            self.trials = {}
        self._save()

    def trial_started(self, trial_id: str, config: Mapping[str, Any]) -> None:
        if self.parent is None or trial_id in self.trials:
            return
        self.trials[trial_id] = self.tracker.start_run(
            name=trial_id,
            kind="trial",
            params=config,
            tags={"labkit.trial_id": trial_id},
            parent=self.parent,
        )
        self._save()

    def trial_result(self, trial_id: str, record: Mapping[str, Any]) -> None:
        tracked = self.trials.get(trial_id)
        if tracked is not None and "epoch" in record:
            tracked.log_epoch(record)

    def trial_ended(self, trial_id: str, status: str, tags: Mapping[str, Any]) -> None:
        tracked = self.trials.get(trial_id)
        if tracked is not None:
            tracked.set_tags(tags)
            tracked.end(status)

    def close(self, best: Mapping[str, Any] | None, interrupted: bool) -> None:
        if self.parent is None:
            return
        if best:
            self.parent.log_metrics({f"best_{k}": v for k, v in best.items()})
            self.parent.set_tags({"labkit.best_trial": best.get("trial_id")})
        self.parent.end("KILLED" if interrupted else "FINISHED")

    def _saved(self) -> dict[str, Any]:
        path = self.folder / TRACKING_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except ValueError:
            return {}

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "uri": self.tracker.uri,
            "run_id": self.parent_id,
            "trials": {trial: run.run_id for trial, run in self.trials.items()},
        }
        (self.folder / TRACKING_FILE).write_text(json.dumps(payload, indent=1) + "\n")
