"""``TrainConfig``: every knob of a training run, checked once, stored with each checkpoint."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from labkit.checks import whole
from labkit.errors import ParameterError

ENCODERS = ("mlp", "conv")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("cosine", "constant")

# Fields that shape the network: a checkpoint made with other values cannot be resumed.
ARCHITECTURE_FIELDS = (
    "latent_dim",
    "hidden",
    "encoder",
    "conv_channels",
    "conv_kernel",
    "see_mask",
)


@dataclass(frozen=True)
class TrainConfig:
    """How to build and train a ``SpectrumVAE``.

    The model starts as probabilistic PCA of the training spectra and its networks learn what
    lies beyond; the defaults train it on ~10k mock spectra in about two minutes on two CPU
    cores. The learning rate follows a cosine decay over ``epochs``. Early stopping is off
    by default (the validation loss is noisy while the rate is high and still falls late in
    the schedule); ``patience=N`` stops once it has not improved for N epochs.
    ``weight_decay`` applies to the networks, not to the linear PCA paths.
    ``kl_warmup`` ramps the KL weight linearly from 0 to ``kl_weight`` over that many epochs
    (0: full weight from the start). ``ema_decay`` (e.g. 0.98) keeps an exponential moving
    average of the weights, updated after every batch: validation measures it and the run
    keeps it. Its validation loss is smooth where the raw weights' jumps while the rate is
    high, so early stopping (``patience``, a tuning sweep's ASHA rungs) ranks runs on their
    trend, not their noise; it averages over ~1/(1 - ema_decay) batches, which should be
    well under the batches of a run. ``device="auto"`` uses CUDA when available.
    ``num_workers`` is the number of Ray Train workers (data-parallel ranks) on a Ray cluster;
    ``threads`` the torch threads per process (``None``: the cores this process may use,
    divided among the workers).
    """

    latent_dim: int = 16
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    hidden: tuple[int, ...] = (512, 256)
    encoder: str = "mlp"
    conv_channels: tuple[int, ...] = (16, 32, 32)
    conv_kernel: int = 9
    see_mask: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    patience: int | None = None
    kl_warmup: int = 5
    kl_weight: float = 1.0
    weight_decay: float = 1e-4
    ema_decay: float | None = None
    device: str = "auto"
    num_workers: int = 2
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
        _whole("latent_dim", self.latent_dim, 1)
        _whole("epochs", self.epochs, 1)
        _whole("batch_size", self.batch_size, 1)
        _whole("conv_kernel", self.conv_kernel, 1)
        _whole("seed", self.seed, 0)
        _whole("kl_warmup", self.kl_warmup, 0)
        _whole("num_workers", self.num_workers, 1)
        if self.patience is not None:
            _whole("patience", self.patience, 1)
        if self.threads is not None:
            _whole("threads", self.threads, 1)
        if not self.hidden:
            raise ParameterError("TrainConfig.hidden needs at least one layer size")
        for size in self.hidden:
            _whole("hidden layer size", size, 1)
        if not self.conv_channels:
            raise ParameterError("TrainConfig.conv_channels needs at least one channel count")
        for size in self.conv_channels:
            _whole("conv channel count", size, 1)
        _positive("lr", self.lr)
        _positive("kl_weight", self.kl_weight, allow_zero=True)
        _positive("weight_decay", self.weight_decay, allow_zero=True)
        if not isinstance(self.val_fraction, int | float) or not 0 <= self.val_fraction < 1:
            raise ParameterError(
                f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction!r}"
            )
        if self.ema_decay is not None and not (
            isinstance(self.ema_decay, int | float) and 0 < self.ema_decay < 1
        ):
            raise ParameterError(
                f"TrainConfig.ema_decay must be None or a number in (0, 1), got {self.ema_decay!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ParameterError(
                f"TrainConfig.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                f"got {self.lr_schedule!r}"
            )
        if self.encoder not in ENCODERS:
            raise ParameterError(
                f"TrainConfig.encoder must be one of {', '.join(ENCODERS)}, got {self.encoder!r}"
            )
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ParameterError(
                f"TrainConfig.device must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            )

    def architecture(self) -> dict[str, Any]:
        """The fields that shape the network, as stored in a checkpoint."""
        arch = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
        arch["hidden"] = list(arch["hidden"])
        arch["conv_channels"] = list(arch["conv_channels"])
        return arch

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
        data["conv_channels"] = list(self.conv_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def resolved_device(self) -> str:
        """The torch device this process trains on: ``auto`` becomes cuda or cpu."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(
                f"TrainConfig.device={self.device!r} but torch sees no CUDA device here; "
                "use device='auto' or 'cpu'"
            )
        return self.device

    def resolved_threads(self, workers: int = 1) -> int:
        """Torch threads for one of ``workers`` processes sharing this machine's cores."""
        if self.threads is not None:
            return self.threads
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // max(1, workers))


def _whole(name: str, value: Any, minimum: int) -> None:
    whole(f"TrainConfig.{name}", value, minimum)


def _positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero) or value != value:
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"TrainConfig.{name} must be a number {bound}, got {value!r}")
