"""Anomaly scores measured against the training population, not against known anomaly kinds.

Three questions about a spectrum, each answered in units of the training spectra's own spread:
does the model reconstruct it as well as it reconstructs typical spectra (log χ² per pixel,
with each pixel's variance raised by the model's typical misfit there); does any stretch of it
miss by more than typical spectra do (a bump, a line at the wrong strength: spread over the
whole spectrum such a misfit barely moves χ² per pixel); and does its latent vector lie where
training spectra lie (the mean distance to its nearest training latents, after whitening
them)? A neighbour density follows the population's real shape (clusters per spectral class,
curved sequences), where one Gaussian would call the empty space between classes typical.
Medians and MADs keep rare oddities in the training set from inflating the spread they are
measured against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

MAD_TO_SIGMA = 1.4826


def _kept(values: np.ndarray | None, keep: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[keep]


def _z(values: np.ndarray, stats: torch.Tensor) -> np.ndarray:
    """``values`` in units of a (center, scale) pair fitted on the training spectra."""
    center, scale = stats.tolist()
    return (values - center) / scale


def _robust(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    center = float(np.median(values))
    scale = float(np.median(np.abs(values - center))) * MAD_TO_SIGMA
    return center, scale if scale > 0 else 1.0


class TrainingPopulation(nn.Module):
    """Statistics of the training spectra, kept as buffers so they travel with the model."""

    # weight of the latent-density term next to the reconstruction term
    LATENT_WEIGHT = 2.0
    LOCAL_WEIGHT = 1.0  # and of the worst-stretch term
    NEIGHBOURS = 20  # training latents whose mean distance measures local density

    def __init__(self, latent_dim: int, n_pixels: int):
        super().__init__()
        # per pixel: how far the model misses typical training spectra beyond their noise
        self.register_buffer("model_variance", torch.zeros(n_pixels))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("latent_mean", torch.zeros(latent_dim, dtype=torch.float64))
        self.register_buffer("latent_whiten", torch.eye(latent_dim, dtype=torch.float64))
        # whitened training latents, the neighbours a spectrum's latent vector is compared with
        self.register_buffer("reference", torch.zeros(0, latent_dim))
        self.register_buffer("chi2_stats", torch.tensor([0.0, 1.0], dtype=torch.float64))
        self.register_buffer("distance_stats", torch.tensor([0.0, 1.0], dtype=torch.float64))
        self.register_buffer("local_stats", torch.tensor([0.0, 1.0], dtype=torch.float64))
        # the combined score over the training spectra: scores are told in its spread
        self.register_buffer("score_stats", torch.tensor([0.0, 1.0], dtype=torch.float64))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # the reference set's size is the fitted population's: take the stored one's shape
        stored = state_dict.get(prefix + "reference")
        if isinstance(stored, torch.Tensor) and stored.ndim == 2:
            self.reference = torch.zeros_like(stored, device=self.reference.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(
        self, chi2_per_pixel: np.ndarray, latents: np.ndarray, local: np.ndarray | None = None
    ) -> None:
        keep = np.isfinite(chi2_per_pixel) & (chi2_per_pixel > 0)
        latents = latents[keep].astype(np.float64)
        if latents.shape[0] < 2:
            return
        mean = latents.mean(axis=0)
        cov = np.cov(latents, rowvar=False).reshape(len(mean), len(mean))
        # a touch of shrinkage: posterior means of unused latent dimensions hug zero
        cov += np.eye(len(mean)) * (1e-3 * np.trace(cov) / len(mean) + 1e-9)
        whiten = np.linalg.inv(np.linalg.cholesky(cov))
        self.latent_mean.copy_(torch.from_numpy(mean))
        self.latent_whiten.copy_(torch.from_numpy(whiten))
        self.reference = torch.from_numpy(self._whiten(latents)).float().to(self.reference.device)
        self.chi2_stats.copy_(torch.tensor(_robust(np.log(chi2_per_pixel[keep]))))
        own = self._log_distance(latents, leave_one_out=True)
        self.distance_stats.copy_(torch.tensor(_robust(own)))
        if local is not None:
            self.local_stats.copy_(torch.tensor(_robust(local[keep])))
        combined = self._combine(
            self._recon_z(chi2_per_pixel[keep]),
            _z(own, self.distance_stats),
            self._local_z(_kept(local, keep), keep.sum()),
        )
        self.score_stats.copy_(torch.tensor(_robust(combined)))
        self.fitted.fill_(True)

    def _whiten(self, latents: np.ndarray) -> np.ndarray:
        mean = self.latent_mean.cpu().numpy()
        whiten = self.latent_whiten.cpu().numpy()
        return (latents.astype(np.float64) - mean) @ whiten.T

    def _log_distance(self, latents: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        """Log mean distance to the nearest reference latents (skipping itself if asked)."""
        reference = self.reference.cpu()
        k = min(self.NEIGHBOURS, len(reference) - int(leave_one_out))
        if k < 1:
            return np.zeros(len(latents))
        white = torch.from_numpy(self._whiten(latents)).float()
        skip = int(leave_one_out)
        out = []
        for start in range(0, len(white), 1024):
            distances = torch.cdist(white[start : start + 1024], reference)
            nearest = distances.topk(k + skip, dim=1, largest=False).values[:, skip:]
            out.append(torch.log(nearest.mean(dim=1) + 1e-12))
        return torch.cat(out).double().numpy()

    def components(
        self, chi2_per_pixel: np.ndarray, latents: np.ndarray, local: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reconstruction, latent, worst-stretch) z-scores, robust and relative to training
        (the last zero when ``local`` is not given)."""
        return (
            self._recon_z(chi2_per_pixel),
            _z(self._log_distance(latents), self.distance_stats),
            self._local_z(local, len(chi2_per_pixel)),
        )

    def _recon_z(self, chi2_per_pixel: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return _z(np.log(chi2_per_pixel), self.chi2_stats)

    def _local_z(self, local: np.ndarray | None, n: int) -> np.ndarray:
        return np.zeros(n) if local is None else _z(local, self.local_stats)

    def score(
        self, chi2_per_pixel: np.ndarray, latents: np.ndarray, local: np.ndarray | None = None
    ) -> np.ndarray:
        if not bool(self.fitted):
            return chi2_per_pixel.astype(np.float64)
        return _z(self._combine(*self.components(chi2_per_pixel, latents, local)), self.score_stats)

    def _combine(self, recon: np.ndarray, latent: np.ndarray, stretch: np.ndarray) -> np.ndarray:
        # only unusually far or badly missed counts: closer or better than typical is no merit
        return (
            recon
            + self.LATENT_WEIGHT * np.maximum(latent, 0.0)
            + self.LOCAL_WEIGHT * np.maximum(stretch, 0.0)
        )


LOCAL_WIDTH = 15  # pixels in a stretch: about a line's width on a survey rest-frame grid


def local_misfit(floored: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Per spectrum: log(1 + the worst stretch's excess χ², in standard deviations).

    ``floored`` (N × P): each pixel's squared residual over its noise and model-floor variance,
    zero where unobserved. Over every LOCAL_WIDTH-pixel stretch with at least half its pixels
    observed, (Σ floored − n) / √(2n) is how far its χ² lies above what noise gives.
    """
    width = min(LOCAL_WIDTH, floored.shape[1])
    sums = _window_sums(floored.double(), width)
    counts = _window_sums(observed.double(), width)
    excess = (sums - counts) / torch.sqrt(2 * counts.clamp(min=1))
    excess = torch.where(counts >= width / 2, excess, -torch.inf)
    return torch.log1p(excess.max(dim=1).values.clamp(min=1e-3))


def _window_sums(values: torch.Tensor, width: int) -> torch.Tensor:
    """Sums over every run of ``width`` consecutive pixels of each row (N × (P − width + 1))."""
    total = torch.nn.functional.pad(values.cumsum(dim=1), (1, 0))
    return total[:, width:] - total[:, :-width]
