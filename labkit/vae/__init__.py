"""Spectral variational autoencoder: model, training (in-process, Ray Train, Dask), checkpoints,
and Ray Tune sweeps."""

from labkit.vae.config import TrainConfig
from labkit.vae.model import SpectrumVAE
from labkit.vae.train import TrainResult, train
from labkit.vae.tune import TuneResult, tune

__all__ = ["SpectrumVAE", "TrainConfig", "TrainResult", "TuneResult", "train", "tune"]
