"""``TrainJob``: everything a trainer needs, in a form that pickles to any worker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labkit.vae.config import TrainConfig
from labkit.vae.data import ChunkSource


@dataclass
class TrainJob:
    """The data (in-memory arrays, or a store's path), the split, the config, the start state."""

    source: ChunkSource  # ArraySource pickles its arrays, StoreSource only the store's path
    train_index: np.ndarray
    val_index: np.ndarray
    config: TrainConfig
    state: bytes  # loop.pack(...) of the state to start from (fresh or resumed)
