"""``TrainJob``: everything a trainer needs, in a form that pickles to any worker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labkit.vae.config import TrainConfig


@dataclass
class TrainJob:
    """Spectra as plain arrays, the split, the config, and the packed starting state."""

    flux: np.ndarray  # (N, P) float32, 0 where masked
    weight: np.ndarray  # (N, P) float32, ivar where usable else 0
    train_index: np.ndarray
    val_index: np.ndarray
    config: TrainConfig
    state: bytes  # loop.pack(...) of the state to start from (fresh or resumed)
