"""Where a training run's epoch loop runs, by backend name: in-process, Ray Train, Dask.

Every trainer takes the same arguments, ``(job, emit, stop, cluster, workdir)``, and blocks
until the run ends; ``emit`` receives each epoch's report. A new training backend is one
module with such a function plus one ``register_trainer`` line (its label is how the training
panel offers it). Trainers are imported on first
use, so choosing in-process never imports Ray or Dask.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from labkit.clusters.spec import IN_PROCESS
from labkit.errors import ParameterError

if TYPE_CHECKING:
    from labkit.clusters import Cluster
    from labkit.vae.job import TrainJob


@dataclass(frozen=True)
class TrainerRecord:
    target: str  # "module:function"
    label: str  # how the training panel names it


TRAINERS: dict[str, TrainerRecord] = {}


class Trainer(Protocol):
    def __call__(
        self,
        job: TrainJob,
        emit: Callable[[dict[str, Any]], None],
        stop: threading.Event,
        cluster: Cluster | None,
        workdir: Path,
    ) -> None: ...


def register_trainer(backend: str, target: str, label: str | None = None) -> None:
    """Train on clusters of ``backend`` with ``target`` ("module:function")."""
    TRAINERS[backend] = TrainerRecord(target, label or backend)


register_trainer(IN_PROCESS, "labkit.vae.local_train:run_in_process", "in-process")
register_trainer("ray", "labkit.vae.ray_train:run_on_ray", "Ray (Ray Train)")
register_trainer("dask", "labkit.vae.dask_train:run_on_dask", "Dask (one worker)")


def trainer(backend: str) -> Trainer:
    """The trainer for clusters of ``backend``; ParameterError when none is registered."""
    if backend not in TRAINERS:
        raise ParameterError(
            f"cannot train on a {backend} cluster: training runs on {', '.join(sorted(TRAINERS))}"
        )
    module, _, name = TRAINERS[backend].target.partition(":")
    return getattr(import_module(module), name)
