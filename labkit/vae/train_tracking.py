"""A training's MLflow run: opened before the first epoch, fed each epoch, closed at the end.

Only this process logs (whatever trains reports its epochs here), so a Ray Train run with
many workers is one MLflow run. A resumed training continues the run it started.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labkit.tracking import TrackedRun, Tracker, data_identity
from labkit.vae.checkpoints import CheckpointStore
from labkit.vae.config import TrainConfig
from labkit.vae.data import ChunkSource


def open_training_run(
    tracker: Tracker | None,
    store: CheckpointStore,
    config: TrainConfig,
    source: ChunkSource,
    backend: str,
    resume: bool,
) -> TrackedRun | None:
    """The run this training logs to (None with tracking off); a resume continues its own."""
    if tracker is None:
        return None
    earlier = store.tracking() if resume else None
    if earlier is not None and earlier.get("uri") == tracker.uri:
        resumed = tracker.resume_run(earlier["run_id"])
        if resumed is not None:
            return resumed
    tracked = tracker.start_run(
        name=store.path.name,
        kind="train",
        params=config.to_dict(),
        tags={
            **data_identity(source),
            "labkit.backend": backend,
            "labkit.checkpoint_dir": str(store.path.resolve()),
        },
    )
    if tracked is not None:
        store.write_tracking(tracker.uri, tracked.run_id)
    return tracked


def log_epoch(tracked: TrackedRun | None, record: dict[str, Any]) -> None:
    if tracked is not None:
        tracked.log_epoch(record)


def close_training_run(
    tracked: TrackedRun | None,
    history: list[dict[str, Any]],
    best_epoch: int,
    model_file: Path,
    stopped: bool,
) -> None:
    """The final figures and the model file, then FINISHED (KILLED when stopped early)."""
    if tracked is None:
        return
    best = next((r for r in history if r["epoch"] == best_epoch), history[-1] if history else {})
    tracked.log_metrics(
        {
            "best_epoch": best_epoch,
            "best_val_loss": best.get("val_loss"),
            "final_loss": history[-1]["loss"] if history else None,
        },
        step=len(history),
    )
    tracked.log_artifact(model_file, "model")
    tracked.end("KILLED" if stopped else "FINISHED")


def fail_training_run(tracked: TrackedRun | None, error: BaseException) -> None:
    if tracked is not None:
        tracked.set_tags({"labkit.error": f"{type(error).__name__}: {error}"[:5000]})
        tracked.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
