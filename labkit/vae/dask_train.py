"""Training on a Dask cluster: the whole epoch loop runs as one task on one worker.

Dask has no data-parallel trainer, so the cluster lends a worker (and its threads or GPU).
In-memory spectra are scattered to it; a store travels as its path and the worker reads its
chunks itself; after every epoch the task scatters the packed training state
and puts its future on a ``distributed.Queue``, so the calling process fetches each checkpoint
straight from the worker and writes it locally. A ``distributed.Event`` carries stop requests.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from labkit.errors import TrainingError
from labkit.vae.config import TrainConfig
from labkit.vae.data import ChunkSource
from labkit.vae.job import TrainJob

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 120.0


def _task(
    source: ChunkSource,
    train_index: np.ndarray,
    val_index: np.ndarray,
    config_dict: dict[str, Any],
    state: bytes,
    name: str,
) -> int:
    """Runs on the Dask worker; returns the number of epochs it trained."""
    import torch
    from distributed import Event, Queue, get_client, get_worker

    from labkit.vae import loop

    config = TrainConfig.from_dict(config_dict)
    client = get_client()
    queue, stop = Queue(f"{name}-reports", client=client), Event(f"{name}-stop", client=client)
    previous = torch.get_num_threads()
    torch.set_num_threads(config.threads or max(1, get_worker().state.nthreads))
    epochs = 0

    def emit(report: dict[str, Any]) -> None:
        nonlocal epochs
        epochs += 1
        queue.put(client.scatter([report], direct=True, hash=False)[0])

    try:
        loop.fit(
            source,
            train_index,
            val_index,
            config,
            loop.unpack(state),
            device=config.resolved_device(),
            emit=emit,
            should_stop=stop.is_set,
        )
    finally:
        torch.set_num_threads(previous)
    return epochs


def run_on_dask(
    job: TrainJob,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    cluster,
    workdir: Path | None = None,
) -> None:
    """Train ``job`` on one worker of ``cluster``; blocks until it ends (``workdir`` unused)."""
    from distributed import Event, Queue

    client = cluster.client
    name = f"labkit-vae-{uuid.uuid4().hex[:8]}"
    queue = Queue(f"{name}-reports", client=client)
    remote_stop = Event(f"{name}-stop", client=client)
    [source] = client.scatter([job.source], direct=True, hash=False)
    future = client.submit(
        _task,
        source,
        job.train_index,
        job.val_index,
        job.config.to_dict(),
        job.state,
        name,
        pure=False,
        key=f"{name}-train",
    )
    try:
        stop_sent = False
        while not future.done():
            _wait(future, POLL_SECONDS)
            _drain(queue, emit)
            if stop.is_set() and not stop_sent:
                remote_stop.set()
                stop_sent = True
        _drain(queue, emit)
        error = future.exception() if future.status == "error" else None
    except KeyboardInterrupt:
        remote_stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while not future.done() and time.monotonic() < deadline:
            _wait(future, POLL_SECONDS)
            _drain(queue, emit)
        future.cancel()
        raise
    finally:
        source.release()
        queue.close()
    if error is not None:
        raise TrainingError(
            f"training failed on the Dask worker: {type(error).__name__}: {error}"
        ) from error
    if future.status == "cancelled":
        raise TrainingError("the training task was cancelled on the Dask cluster")


def _wait(future, seconds: float) -> None:
    from distributed import wait

    with contextlib.suppress(TimeoutError):
        wait(future, timeout=seconds)


def _drain(queue, emit: Callable[[dict[str, Any]], None]) -> None:
    """Hand every report waiting on ``queue`` to ``emit``, oldest first."""
    # a get() that times out makes the scheduler log an error, so only take what is there
    for _ in range(queue.qsize()):
        ref = queue.get()
        report = ref.result()
        ref.release()
        emit(report)
