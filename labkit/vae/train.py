"""``train``: one call that trains a ``SpectrumVAE`` here, on Ray Train, or on a Dask worker.

Whatever trains, this process owns the run: it checks the data, builds (or resumes) the
starting state, writes a checkpoint for every epoch the backend reports, shows progress, and
at the end fits the anomaly statistics and saves the final model.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from labkit.clusters import Cluster, ClusterSpec, using_cluster
from labkit.errors import ParameterError
from labkit.log import logger
from labkit.tracking import open_tracker
from labkit.vae import loop
from labkit.vae.checkpoints import CheckpointStore, latest_run_dir, new_run_dir
from labkit.vae.config import TrainConfig
from labkit.vae.data import (
    SAMPLE_ROWS,
    ChunkSource,
    chunk_source,
    pixel_statistics,
    sample,
    split_indices,
)
from labkit.vae.job import TrainJob
from labkit.vae.model import SpectrumVAE
from labkit.vae.train_tracking import (
    close_training_run,
    fail_training_run,
    log_epoch,
    open_training_run,
)
from labkit.vae.trainers import IN_PROCESS, trainer

POPULATION_SAMPLE = 4000  # training spectra the anomaly statistics (and the PCA start) use


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
    mlflow_run_id: str | None = None  # the MLflow run it logged to (None: tracking off)

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
    cluster: ClusterSpec = None,
    resume: bool = False,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainResult:
    """Train a ``SpectrumVAE`` on preprocessed (rest-frame, one log-λ grid) spectra.

    ``spectra``: a ``Spectra`` in memory or a ``SpectraStore`` (``preprocess(..., out=...)``),
    which is read chunk by chunk, never whole: here, on each Ray Train worker (its own shard
    of chunks) or on the Dask worker. The same seed trains the same model from either.
    ``cluster`` (a ``ClusterSpec``): a ``Cluster`` (Ray: Ray Train with ``config.num_workers``
    DDP workers; Dask: the loop runs on one worker), ``"in-process"`` or ``False`` (here, even
    when a cluster is attached), ``None`` for the active cluster if any, else in-process, or a
    backend name, address or cluster name (connected for this run and closed after it).
    ``checkpoint_dir`` (default: a new ``./vae-checkpoints/run-*``) receives a checkpoint
    after every epoch; ``resume=True`` continues from its latest one (default: the
    newest run under ``./vae-checkpoints``). ``callback(record)`` sees each epoch's record;
    setting ``stop`` (a ``threading.Event``) ends the run after the current epoch, as does
    Ctrl-C (which is then re-raised). Trained in-process in the main thread (a notebook
    cell), SIGUSR1 (what a SLURM batch passes on when the walltime is near) writes a
    checkpoint after the current batch, which ``resume=True`` continues from exactly. Each
    training is one MLflow run (the config as parameters, per-epoch losses, the model file;
    ``result.mlflow_run_id``). Raises
    ``TrainingDataError``, ``ParameterError``, ``CheckpointError`` or ``TrainingError``
    naming what is wrong.
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ParameterError(
            f"config must be a labkit.vae.TrainConfig, got {type(config).__name__}"
        )
    source = chunk_source(spectra)
    with using_cluster(cluster) as chosen:
        return _train(source, config, chosen, resume, checkpoint_dir, progress, callback, stop)


def _train(
    source: ChunkSource,
    config: TrainConfig,
    cluster: Cluster | None,
    resume: bool,
    checkpoint_dir: str | Path | None,
    progress: bool,
    callback: Callable[[dict[str, Any]], None] | None,
    stop: threading.Event | None,
) -> TrainResult:
    backend = cluster.backend if cluster is not None else IN_PROCESS
    run = trainer(backend)  # refuse an unknown backend before any file is written
    tracker = open_tracker()  # and a tracking URI that cannot work
    if resume:
        run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else latest_run_dir()
    else:
        run_dir = Path(checkpoint_dir) if checkpoint_dir is not None else new_run_dir()
    store = CheckpointStore(run_dir)
    train_index, val_index = split_indices(len(source), config.val_fraction, config.seed)
    if resume:
        state = _resumed_state(store, config, source)
    else:
        state = _fresh_state(store, config, source, train_index)
    store.write_config(config.to_dict(), source.wave, backend)
    job = TrainJob(source, train_index, val_index, config, loop.pack(state))
    history = list(state["history"])
    stop = stop if stop is not None else threading.Event()
    tracked = open_training_run(tracker, store, config, source, backend, resume)
    recorder = _Recorder(
        store, history, config, progress, callback, desc=f"VAE ({backend})", tracked=tracked
    )
    try:
        if not loop.finished(state, config):
            with recorder, _checkpoint_on_signal(recorder.asked, backend == IN_PROCESS):
                run(job, recorder, stop, cluster, store.path)
        model = SpectrumVAE.from_payload(*store.best_payload())
        model.fit_population(sample(source, train_index, config.seed, POPULATION_SAMPLE))
        model_file = store.write_model(model)
    except BaseException as exc:
        fail_training_run(tracked, exc)
        raise
    final = store.latest_state() if store.epochs() else state
    result = TrainResult(
        history=history,
        model=model,
        checkpoint_dir=store.path.resolve(),
        backend=backend,
        config=config,
        stopped=stop.is_set() and not loop.finished(final, config),
        best_epoch=int(final["best_epoch"]),
        mlflow_run_id=tracked.run_id if tracked is not None else None,
    )
    close_training_run(tracked, history, result.best_epoch, model_file, result.stopped)
    return result


def _fresh_state(
    store: CheckpointStore, config: TrainConfig, source: ChunkSource, train_index: np.ndarray
) -> dict[str, Any]:
    """A new model: pixel statistics and the PCA start from a seeded sample of whole chunks."""
    store.start_fresh()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SpectrumVAE(source.wave, **config.architecture())
    rows = sample(source, train_index, config.seed, SAMPLE_ROWS)
    model.set_flux_statistics(*pixel_statistics(rows))
    model.start_from_pca(rows.flux[:POPULATION_SAMPLE], rows.weight[:POPULATION_SAMPLE])
    return loop.initial_state(model, config)


def _resumed_state(
    store: CheckpointStore, config: TrainConfig, source: ChunkSource
) -> dict[str, Any]:
    state = store.latest_state()
    model = SpectrumVAE.from_payload(state["model"], str(store.path))
    model.check_compatible(config.architecture(), source.wave)
    return state


@contextmanager
def _checkpoint_on_signal(asked: threading.Event, wanted: bool) -> Iterator[None]:
    """While training runs (``wanted``: here, not on a cluster), SIGUSR1 sets ``asked``:
    the previous handler comes back after. Only the main thread can handle signals: in any
    other (the training panel's) nothing is installed."""
    usable = hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread()
    if not (wanted and usable):
        yield
        return
    previous = signal.signal(signal.SIGUSR1, lambda _signum, _frame: asked.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL if previous is None else previous)


class _Recorder:
    """Receives each epoch's report: checkpoint, history, progress bar, user callback; and
    part-way checkpoints when one is ``asked`` (SIGUSR1)."""

    def __init__(self, store, history, config, progress, callback, desc, tracked=None):
        self.store, self.history, self.callback = store, history, callback
        self.config, self.progress, self.desc = config, progress, desc
        self.tracked = tracked
        self.bar = None
        self.asked = threading.Event()

    def checkpoint_asked(self) -> bool:
        """True once after a checkpoint was asked for (the loop then hands one over)."""
        if not self.asked.is_set():
            return False
        self.asked.clear()
        return True

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
        if "partial" in report:
            path = self.store.write_partial(report["partial"])
            logger.warning("checkpoint asked for (SIGUSR1): %s", path)
            return
        record = dict(report["record"])
        self.history.append(record)
        self.store.write_epoch(record["epoch"], report["state"], report["best_epoch"], self.history)
        log_epoch(self.tracked, record)
        self.bar.update(1)
        shown = {"loss": f"{record['loss']:.4g}"}
        if record["val_loss"] is not None:
            shown["val_loss"] = f"{record['val_loss']:.4g}"
        self.bar.set_postfix(shown, refresh=False)
        if self.callback is not None:
            self.callback(dict(record))
