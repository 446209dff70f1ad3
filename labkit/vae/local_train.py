"""Training in this process: the epoch loop on ``config.device``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from labkit.vae import loop

if TYPE_CHECKING:
    from labkit.clusters import Cluster
    from labkit.vae.job import TrainJob


def run_in_process(
    job: TrainJob,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    cluster: Cluster | None = None,
    workdir: Path | None = None,
) -> None:
    """The epoch loop here, with ``config.threads`` torch threads (restored afterwards).

    An ``emit`` with a ``checkpoint_asked()`` method (``train``'s recorder) is asked after
    every batch whether to checkpoint part way through the epoch (SIGUSR1)."""
    device = job.config.resolved_device()
    previous = torch.get_num_threads()
    torch.set_num_threads(job.config.resolved_threads())
    try:
        loop.fit(
            job.source,
            job.train_index,
            job.val_index,
            job.config,
            loop.unpack(job.state),
            device=device,
            emit=emit,
            should_stop=stop.is_set,
            checkpoint_now=getattr(emit, "checkpoint_asked", lambda: False),
        )
    finally:
        torch.set_num_threads(previous)
