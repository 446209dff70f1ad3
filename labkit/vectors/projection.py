"""A 2-D view of the latent space: principal components of the stored latent vectors.

PCA is linear, so a query or a neighbour lands on the same map as the population it was fitted
on, and the axes keep a meaning (directions of largest spread) across sessions.
"""

from __future__ import annotations

import numpy as np

from labkit.errors import ParameterError

MAX_FIT_ROWS = 50_000  # a random subset this large pins the components down to ~1e-3


class LatentProjection:
    """Principal axes of ``vectors`` (N x d); ``transform`` maps any d-vectors onto them."""

    def __init__(self, vectors: np.ndarray, *, components: int = 2, seed: int = 0):
        data = np.asarray(vectors, dtype=np.float64)
        if data.ndim != 2 or data.shape[0] < 2:
            raise ParameterError(
                f"a projection needs at least 2 latent vectors (N x d), got shape {data.shape}"
            )
        if data.shape[0] > MAX_FIT_ROWS:
            pick = np.random.default_rng(seed).choice(data.shape[0], MAX_FIT_ROWS, replace=False)
            data = data[pick]
        self.mean = data.mean(axis=0)
        _, singular, axes = np.linalg.svd(data - self.mean, full_matrices=False)
        keep = min(components, axes.shape[0])
        self.axes = axes[:keep]
        variance = singular**2
        total = variance.sum()
        self.explained = variance[:keep] / total if total > 0 else np.zeros(keep)
        if keep < components:  # d == 1: pad so callers always get two columns
            self.axes = np.vstack([self.axes, np.zeros((components - keep, data.shape[1]))])
            self.explained = np.concatenate([self.explained, np.zeros(components - keep)])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """N x 2 coordinates (PC1, PC2) of N x d vectors."""
        data = np.asarray(vectors, dtype=np.float64)
        if data.ndim == 1:
            data = data[None, :]
        if data.shape[1] != self.mean.shape[0]:
            raise ParameterError(
                f"vectors of dimension {data.shape[1]} cannot be projected with axes fitted on "
                f"dimension {self.mean.shape[0]}"
            )
        return (data - self.mean) @ self.axes.T
