"""What a sweep's driver hears from Ray Tune: each trial's epochs, its end, and a stop flag.

Tune saves its run config with the sweep (for ``Tuner.restore``); these objects hold this
session's progress bar, MLflow runs and stop event, so they are saved inert and ``tune``
gives a restored sweep live ones again.
"""

from __future__ import annotations

import threading
from typing import Any

from ray.tune import Callback

from labkit.vae.tune_tracking import REPORTED, SweepTracking


class _Inert:
    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]


class StopOnEvent(_Inert):
    """Tune's ``stop``: every trial, and so the sweep, ends once ``event`` is set."""

    def __init__(self, event: threading.Event | None = None):
        self.event = event if event is not None else threading.Event()

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.event.is_set()


class Watch(_Inert, Callback):
    """Each trial's epochs to MLflow, the user's callback and the progress bar."""

    def __init__(
        self, tracking: SweepTracking | None = None, callback=None, bar=None, max_epochs: int = 0
    ):
        self.tracking, self.callback, self.bar = tracking, callback, bar
        self.max_epochs = max_epochs

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if self.tracking is not None:
            self.tracking.trial_started(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        record = {k: result.get(k) for k in REPORTED}
        if self.tracking is not None:
            self.tracking.trial_result(trial.trial_id, record)
        if self.callback is not None:  # with the trial's values, for tables and legends
            self.callback(trial.trial_id, {**trial.config, **record})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = (trial.last_result or {}).get("epoch") or 0
        self._ended(trial, "FINISHED", {"labkit.stopped_early": last < self.max_epochs})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trial, "FAILED", {})

    def _ended(self, trial, status: str, tags: dict[str, Any]) -> None:
        if self.tracking is not None:
            self.tracking.trial_ended(trial.trial_id, status, tags)
        if self.bar is not None:
            self.bar.update(1)
