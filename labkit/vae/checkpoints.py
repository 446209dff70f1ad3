"""One training run's directory: a checkpoint per epoch, the history, the final model.

Layout (all written by the process that called ``train``, whatever backend trained)::

    config.json        the TrainConfig and the grid, for people and for resume checks
    epoch-0007.pt      training state after epoch 7 (model, optimizer, history, early stopping)
    partial.pt         training state part way through the next epoch, written when asked
                       (SIGUSR1: SLURM's walltime is near); gone once that epoch ends
    history.json       one record per epoch: epoch, loss, val_loss, seconds
    model.pt           the final model (best epoch, with anomaly statistics): SpectrumVAE.load

Only the latest epoch and the best one are kept; files are replaced atomically, so an
interruption at any moment leaves a readable checkpoint behind. This module knows files, not
models: it hands out model payloads, and ``SpectrumVAE.from_payload`` builds the model (so
``model`` imports ``checkpoints``, never the other way round).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from labkit.errors import CheckpointError

if TYPE_CHECKING:
    from labkit.vae.model import SpectrumVAE

EPOCH_FILE = re.compile(r"^epoch-(\d+)\.pt$")
MODEL_FILE = "model.pt"
PARTIAL_FILE = "partial.pt"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.json"
TRACKING_FILE = "tracking.json"  # the MLflow run this training logs to, for resume
DEFAULT_ROOT = Path("vae-checkpoints")


def new_run_dir(root: str | os.PathLike | None = None) -> Path:
    """A fresh directory under ``root`` (default ``./vae-checkpoints``), named by time."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root.resolve() / f"run-{stamp}-{uuid.uuid4().hex[:6]}"


def latest_run_dir(root: str | os.PathLike | None = None) -> Path:
    """The most recently written run under ``root`` that has an epoch checkpoint."""
    root = Path(root) if root is not None else DEFAULT_ROOT
    runs = [p for p in root.glob("run-*") if CheckpointStore(p).has_state()]
    if not runs:
        raise CheckpointError(
            f"resume=True but there is no checkpoint under {root.resolve()}; pass the "
            "checkpoint_dir of the run to resume"
        )
    return max(runs, key=lambda p: p.stat().st_mtime)


class CheckpointStore:
    """Reads and writes one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def epochs(self) -> list[int]:
        if not self.path.is_dir():
            return []
        found = (EPOCH_FILE.match(p.name) for p in self.path.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def has_state(self) -> bool:
        """Whether training can resume from here: an epoch or a part-way checkpoint."""
        return bool(self.epochs()) or (self.path / PARTIAL_FILE).is_file()

    def epoch_path(self, epoch: int) -> Path:
        return self.path / f"epoch-{epoch:04d}.pt"

    def start_fresh(self) -> None:
        """Remove an earlier run's files, so its checkpoints cannot mix with this one's."""
        self.path.mkdir(parents=True, exist_ok=True)
        for epoch in self.epochs():
            self.epoch_path(epoch).unlink(missing_ok=True)
        for name in (MODEL_FILE, HISTORY_FILE, CONFIG_FILE, TRACKING_FILE, PARTIAL_FILE):
            (self.path / name).unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any], wave: np.ndarray, backend: str) -> None:
        info = {
            "config": config,
            "backend": backend,
            "grid": {"pixels": int(wave.size), "first": float(wave[0]), "last": float(wave[-1])},
        }
        _write_text(self.path / CONFIG_FILE, json.dumps(info, indent=2) + "\n")

    def write_epoch(self, epoch: int, state: bytes, best_epoch: int, history: list[dict]) -> Path:
        path = self.epoch_path(epoch)
        _write_bytes(path, state)
        (self.path / PARTIAL_FILE).unlink(missing_ok=True)  # this epoch has ended
        _write_text(self.path / HISTORY_FILE, json.dumps(history, indent=1) + "\n")
        for old in self.epochs():
            if old not in (epoch, best_epoch):
                self.epoch_path(old).unlink(missing_ok=True)
        return path

    def write_partial(self, state: bytes) -> Path:
        """The training state part way through an epoch (``loop.fit``'s ``step``)."""
        path = self.path / PARTIAL_FILE
        _write_bytes(path, state)
        return path

    def write_tracking(self, uri: str, run_id: str) -> None:
        _write_text(self.path / TRACKING_FILE, json.dumps({"uri": uri, "run_id": run_id}) + "\n")

    def tracking(self) -> dict[str, str] | None:
        """The MLflow run (``uri``, ``run_id``) an earlier start of this run logged to."""
        path = self.path / TRACKING_FILE
        try:
            return json.loads(path.read_text()) if path.exists() else None
        except ValueError:
            return None

    def history(self) -> list[dict]:
        path = self.path / HISTORY_FILE
        return json.loads(path.read_text()) if path.exists() else []

    def latest_state(self) -> dict[str, Any]:
        """The newest training state: part way through an epoch, else the newest epoch's."""
        epochs = self.epochs()
        partial = self.path / PARTIAL_FILE
        if partial.is_file():
            state = read_payload(partial)
            if not epochs or state.get("epoch", -1) >= epochs[-1]:
                return state
        if not epochs:
            raise CheckpointError(f"resume=True but {self.path} holds no epoch checkpoint")
        return self.read_state(epochs[-1])

    def read_state(self, epoch: int) -> dict[str, Any]:
        path = self.epoch_path(epoch)
        state = read_payload(path)
        if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
            raise CheckpointError(f"{path} is not a labkit training checkpoint")
        return state

    def best_payload(self) -> tuple[Any, str]:
        """(model payload, its file) of the best epoch so far (the latest when none is best)."""
        latest = self.latest_state()
        best = latest.get("best_epoch") or latest["epoch"]
        state = self.read_state(best) if best in self.epochs() else latest
        return state["model"], str(self.epoch_path(best))

    def write_model(self, model: SpectrumVAE) -> Path:
        return model.save(self.path / MODEL_FILE)

    def model_payload(self, map_location: str = "cpu") -> tuple[Any, str]:
        """(payload, its file) of the final model, or the best epoch's when the run did not
        finish."""
        final = self.path / MODEL_FILE
        if final.exists():
            return read_payload(final, map_location), str(final)
        if self.epochs():
            return self.best_payload()
        raise CheckpointError(f"{self.path} holds no model: neither {MODEL_FILE} nor epoch files")


def read_payload(path: Path, map_location: str = "cpu") -> Any:
    """``torch.load`` with safe unpickling, turning every failure into ``CheckpointError``."""
    if not path.exists():
        raise CheckpointError(f"no model checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a truncated or foreign file
        raise CheckpointError(
            f"cannot read the model checkpoint {path}: {type(exc).__name__}: {exc}"
        ) from None


def _write_bytes(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _write_text(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())
