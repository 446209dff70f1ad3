"""Spectral variational autoencoder: model, training (in-process, Ray Train, Dask), checkpoints."""

from labkit.vae.config import TrainConfig
from labkit.vae.model import SpectrumVAE
from labkit.vae.train import TrainResult, train

__all__ = ["SpectrumVAE", "TrainConfig", "TrainResult", "train"]
