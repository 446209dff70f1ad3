"""Experiment tracking in MLflow: every training, run, batch and sweep is an MLflow run.

``tracking_uri()`` tells where runs go; ``Tracker.open()`` opens that store (None when
``LABKIT_TRACKING=off``); ``sync()`` sends runs kept locally while their server was down.
"""

from labkit.tracking.client import TrackedRun, Tracker, open_tracker
from labkit.tracking.lineage import data_identity, notebook_tags
from labkit.tracking.sync import SyncResult, sync
from labkit.tracking.uri import tracking_enabled, tracking_uri

__all__ = [
    "SyncResult",
    "TrackedRun",
    "Tracker",
    "data_identity",
    "notebook_tags",
    "open_tracker",
    "sync",
    "tracking_enabled",
    "tracking_uri",
]
