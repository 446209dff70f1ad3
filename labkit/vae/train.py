"""``train``: one call that trains a ``SpectrumVAE`` here, on Ray Train, or on a Dask worker.

Whatever trains, this process owns the run: it checks the data, builds (or resumes) the
starting state, writes a checkpoint for every epoch the backend reports, shows progress, and
at the end fits the anomaly statistics and saves the final model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.clusters import Cluster, resolve_cluster
from labkit.errors import NotConnectedError, ParameterError
from labkit.vae import loop
from labkit.vae.checkpoints import CheckpointStore, latest_run_dir, new_run_dir
from labkit.vae.config import TrainConfig
from labkit.vae.data import TrainingArrays, pixel_statistics, split_indices, training_arrays
from labkit.vae.job import TrainJob
from labkit.vae.model import SpectrumVAE

IN_PROCESS = "in-process"
POPULATION_SAMPLE = 4000  # training spectra the anomaly statistics are fitted on


@dataclass
class TrainResult:
    """What a training run produced; the same shape whichever backend trained."""

    history: list[dict[str, Any]]
    model: SpectrumVAE
    checkpoint_dir: Path
    backend: str
    config: TrainConfig
    stopped: bool = False  # a stop was requested before the run finished
    best_epoch: int = 0

    def __repr__(self) -> str:
        last = self.history[-1] if self.history else {}
        return (
            f"<TrainResult {self.backend} epochs={len(self.history)} best_epoch={self.best_epoch}"
            f" loss={last.get('loss', float('nan')):.4g} val_loss={last.get('val_loss')}"
            f" stopped={self.stopped} checkpoint_dir={self.checkpoint_dir}>"
        )


def train(
    spectra: Any,
    config: TrainConfig | None = None,
    cluster: Cluster | str | bool | None = None,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train a ``SpectrumVAE`` on preprocessed (rest-frame, one log-λ grid) spectra.

    ``cluster``: a ``Cluster`` (Ray: Ray Train with ``config.num_workers`` DDP workers; Dask:
    the loop runs on one worker), ``"in-process"`` or ``False`` (here, even when a cluster is
    attached), or ``None`` for the active cluster if any, else in-process.
    ``checkpoint_dir`` (default: a new ``./vae-checkpoints/run-*``) receives a checkpoint
    after every epoch; ``resume=True`` continues from its latest one (default: the
    newest run under ``./vae-checkpoints``). ``callback(record)`` sees each epoch's record;
    setting ``stop`` (a ``threading.Event``) ends the run after the current epoch, as does
    Ctrl-C (which is then re-raised). Raises ``TrainingDataError``, ``ParameterError``,
    ``CheckpointError`` or ``TrainingError`` naming what is wrong.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ParameterError(
            f"config must be a labkit.vae.TrainConfig, got {type(config).__name__}"
        )
    arrays = training_arrays(spectra)
    backend, cluster = _choose_backend(cluster)
    if resume:
        run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else latest_run_dir()
    else:
        run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else new_run_dir()
    store = CheckpointStore(run_dir)
    train_index, val_index = split_indices(len(arrays), config.val_fraction, config.seed)
    if resume:
        state = _resumed_state(store, config, arrays)
    else:
        state = _fresh_state(store, config, arrays, train_index)
    store.write_config(config.to_dict(), arrays.wave, backend)
    job = TrainJob(arrays.flux, arrays.weight, train_index, val_index, config, loop.pack(state))
    history = list(state["history"])
    stop = stop if stop is not None else threading.Event()
    recorder = _Recorder(store, history, config, progress, callback, desc=f"VAE ({backend})")
    if not loop.finished(state, config):
        with recorder:
            _run(backend, job, recorder, stop, cluster, store)
    model = store.best_model()
    model.fit_population(arrays.subset(_population_sample(train_index, config.seed)))
    store.write_model(model)
    final = store.latest_state() if store.epochs() else state
    return TrainResult(
        history=history,
        model=model,
        checkpoint_dir=store.path.resolve(),
        backend=backend,
        config=config,
        stopped=stop.is_set() and not loop.finished(final, config),
        best_epoch=int(final["best_epoch"]),
    )


def _run(backend: str, job: TrainJob, emit, stop: threading.Event, cluster, store) -> None:
    if backend == "ray":
        from labkit.vae.ray_train import run_on_ray

        run_on_ray(job, emit, stop, cluster, store.path / "ray")
    elif backend == "dask":
        from labkit.vae.dask_train import run_on_dask

        run_on_dask(job, emit, stop, cluster)
    else:
        run_in_process(job, emit, stop)


def run_in_process(job: TrainJob, emit, stop: threading.Event) -> None:
    """The epoch loop in this process, on ``config.device`` with ``config.threads`` threads."""
    device = job.config.resolved_device()
    previous = torch.get_num_threads()
    torch.set_num_threads(job.config.resolved_threads())
    try:
        loop.fit(
            job.flux,
            job.weight,
            job.train_index,
            job.val_index,
            job.config,
            loop.unpack(job.state),
            device=device,
            emit=emit,
            should_stop=stop.is_set,
        )
    finally:
        torch.set_num_threads(previous)


def _population_sample(train_index: np.ndarray, seed: int) -> np.ndarray:
    """Enough training spectra for robust population statistics, without scoring them all."""
    if len(train_index) <= POPULATION_SAMPLE:
        return train_index
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(train_index, POPULATION_SAMPLE, replace=False))


def _choose_backend(cluster: Cluster | str | bool | None) -> tuple[str, Cluster | None]:
    if isinstance(cluster, str):
        if cluster != IN_PROCESS:
            raise ParameterError(
                f"cluster must be a labkit Cluster, None or {IN_PROCESS!r}, got {cluster!r}"
            )
        return IN_PROCESS, None
    cluster = resolve_cluster(cluster)  # None: the active one, if any; False: none
    if cluster is None:
        return IN_PROCESS, None
    if not isinstance(cluster, Cluster):
        raise ParameterError(
            f"cluster must be a labkit Cluster, None or {IN_PROCESS!r}, "
            f"got {type(cluster).__name__}"
        )
    if cluster.closed:
        raise NotConnectedError(
            f"the {cluster.backend} cluster at {cluster.address} was closed; connect again first"
        )
    return cluster.backend, cluster


def _fresh_state(
    store: CheckpointStore, config: TrainConfig, arrays: TrainingArrays, train_index: np.ndarray
) -> dict[str, Any]:
    store.start_fresh()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SpectrumVAE(arrays.wave, **config.architecture())
    model.set_flux_statistics(*pixel_statistics(arrays.subset(train_index)))
    sample = arrays.subset(_population_sample(train_index, config.seed))
    model.start_from_pca(sample.flux, sample.weight)
    return loop.initial_state(model, config)


def _resumed_state(
    store: CheckpointStore, config: TrainConfig, arrays: TrainingArrays
) -> dict[str, Any]:
    state = store.latest_state()
    model = SpectrumVAE.from_payload(state["model"], str(store.path))
    model.check_compatible(config.architecture(), arrays.wave)
    return state


class _Recorder:
    """Receives each epoch's report: checkpoint, history, progress bar, user callback."""

    def __init__(self, store, history, config, progress, callback, desc):
        self.store, self.history, self.callback = store, history, callback
        self.config, self.progress, self.desc = config, progress, desc
        self.bar = None

    def __enter__(self) -> _Recorder:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.config.epochs,
            initial=len(self.history),
            desc=self.desc,
            unit="epoch",
            disable=not self.progress,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def __call__(self, report: dict[str, Any]) -> None:
        record = dict(report["record"])
        self.history.append(record)
        self.store.write_epoch(record["epoch"], report["state"], report["best_epoch"], self.history)
        self.bar.update(1)
        shown = {"loss": f"{record['loss']:.4g}"}
        if record["val_loss"] is not None:
            shown["val_loss"] = f"{record['val_loss']:.4g}"
        self.bar.set_postfix(shown, refresh=False)
        if self.callback is not None:
            self.callback(dict(record))
