"""``tune``: a Ray Tune sweep of ``train`` over TrainConfig fields, with ASHA early stopping.

Each trial trains in its own Ray worker process with labkit's ``train`` (in that process,
one thread per CPU Tune gives it), reading the data where it lives: a store by its path, or
in-memory arrays put once into Ray's object store (``tune.with_parameters``). Every epoch a
trial reports ``epoch``, ``loss`` and ``val_loss``; ASHA stops the trials that fall behind at
its rungs. Tune keeps the sweep's state under ``storage_path/name`` and each trial keeps
labkit checkpoints there too, so ``tune(..., resume=True)`` restores an interrupted sweep
with ``Tuner.restore`` and unfinished trials go on from their last epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.checks import whole
from labkit.clusters import ClusterSpec, using_cluster
from labkit.errors import ParameterError, TrainingError, UnsupportedOperationError
from labkit.runs.bundle import SWEEP_FILE
from labkit.tracking import data_identity, open_tracker
from labkit.tracking.uri import TRACKING_SWITCH_ENV
from labkit.vae.config import TrainConfig
from labkit.vae.data import chunk_source
from labkit.vae.tune_tracking import REPORTED, SweepTracking

SCHEDULERS = ("asha", "fifo")
METRICS = tuple(name for name in REPORTED if name != "epoch")  # what ``metric`` can name
REDUCTION = 4  # ASHA keeps the best quarter of the trials at each rung (Ray's default)
CHECKPOINTS = "labkit-checkpoints"  # in the sweep's folder: one labkit run folder per trial
_FIXED = {"epochs": "max_epochs", "num_workers": "the trial's own process", "device": "Tune"}


@dataclass
class TuneResult:
    """A finished (or stopped) sweep: the best trial's settings and figures, every trial."""

    best_config: TrainConfig  # the base config with the best trial's values, max_epochs long
    best_result: dict[str, Any]  # its last reported epoch, loss, val_loss and trial_id
    trials: Any  # a pandas DataFrame: one row per trial, its values and last figures
    path: Path  # the sweep's folder (Tune's state and each trial's checkpoints)
    stopped: bool = False
    mlflow_run_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"<TuneResult trials={len(self.trials)} best={self.best_result} "
            f"stopped={self.stopped} path={self.path}>"
        )


def tune(
    data: Any,
    space: Mapping[str, Any],
    num_samples: int = 16,
    scheduler: str | None = "asha",
    metric: str = "val_loss",
    max_epochs: int = 30,
    cluster: ClusterSpec = None,
    *,
    base: TrainConfig | None = None,
    name: str | None = None,
    storage_path: str | os.PathLike | None = None,
    resume: bool = False,
    seed: int | None = None,
    progress: bool = True,
    callback: Callable[[str, dict[str, Any]], None] | None = None,
    stop: threading.Event | None = None,
) -> TuneResult:
    """Search ``space`` with ``num_samples`` trials of ``train`` on a Ray cluster.

    ``space`` maps TrainConfig fields to a list of choices (``{"lr": [1e-3, 3e-3]}``), a Ray
    Tune search domain (``tune.loguniform(1e-4, 1e-2)``) or ``tune.grid_search([...])``
    (every value, each ``num_samples`` times); other fields come from
    ``base``. ``scheduler``: ``"asha"`` (early stopping on ``metric``) or ``"fifo"``/None
    (every trial runs ``max_epochs``). ``cluster``: a Ray cluster (a ``ClusterSpec``; None:
    the active one, else a local one). The sweep's folder is ``storage_path/name`` (default
    ``./tune/sweep-STAMP``); ``resume=True`` restores the sweep there (without a name: the
    newest), interrupted by Ctrl-C or a lost notebook; trials cut mid-way go on from their
    last epoch. ``seed`` makes the sampled settings (and their order) the same on every
    sweep with that seed. ``callback(trial_id, record)`` sees every epoch of every trial;
    setting ``stop`` ends the sweep. The sweep is an MLflow run and each trial a child of
    it. Raises ``ParameterError`` naming the field of a bad space before any trial starts.
    """
    base = TrainConfig() if base is None else base
    if not isinstance(base, TrainConfig):
        raise ParameterError(f"base must be a labkit.vae.TrainConfig, got {type(base).__name__}")
    num_samples = whole("num_samples", num_samples, 1)
    max_epochs = whole("max_epochs", max_epochs, 1)
    if seed is not None:
        seed = whole("seed", seed, 0)
    param_space = search_space(space, base)
    if metric not in METRICS:
        raise ParameterError(
            f"metric {metric!r} is never reported by a trial; trials report {', '.join(METRICS)}"
        )
    if metric == "val_loss" and base.val_fraction == 0 and "val_fraction" not in space:
        raise ParameterError("metric 'val_loss' needs base.val_fraction > 0 (no held-out data)")
    if scheduler not in (*SCHEDULERS, None):
        raise ParameterError(f"scheduler must be one of {SCHEDULERS} or None, got {scheduler!r}")
    folder = sweep_folder(storage_path, name, resume)
    source = chunk_source(data)
    tracker = open_tracker()  # a tracking URI that cannot work is refused before any trial
    with using_cluster(cluster, required=True) as chosen:
        if chosen.backend != "ray":
            raise UnsupportedOperationError(
                f"tuning runs Ray Tune trials and needs a Ray cluster; {chosen.address} is a "
                f"{chosen.backend} cluster: connect with labkit.connect(backend='ray') (or to "
                "a Ray head's address) and tune there"
            )
        sweep = _Sweep(source, param_space, base, num_samples, scheduler, metric, max_epochs, seed)
        return sweep.run(folder, resume, tracker, progress, callback, stop or threading.Event())


def sweep_folder(storage_path: str | os.PathLike | None, name: str | None, resume: bool) -> Path:
    """``storage_path/name``: a new ``sweep-STAMP`` by default; ``resume`` without a name
    takes the newest sweep there. A new sweep never reuses an earlier one's folder."""
    from labkit.runs.bundle import stamp

    root = Path(storage_path or "tune").expanduser().resolve()
    if resume and name is None:
        earlier = sorted(root.glob(f"*/{SWEEP_FILE}"), key=lambda p: p.stat().st_mtime)
        if not earlier:
            raise ParameterError(f"resume=True but there is no sweep under {root} to restore")
        return earlier[-1].parent
    folder = root / (name or f"sweep-{stamp()}")
    if resume and not (folder / SWEEP_FILE).is_file():
        raise ParameterError(f"resume=True but {folder} holds no sweep to restore")
    if not resume and (folder / SWEEP_FILE).is_file():
        raise ParameterError(
            f"a sweep already ran in {folder}: resume=True continues it, or give another name"
        )
    return folder


def search_space(space: Mapping[str, Any], base: TrainConfig) -> dict[str, Any]:
    """``space`` as Ray Tune's ``param_space``, each value checked against TrainConfig."""
    from ray import tune as ray_tune
    from ray.tune.search.sample import Domain

    if not isinstance(space, Mapping) or not space:
        raise ParameterError(
            "space must map TrainConfig fields to a list of choices or a Ray Tune domain, "
            'e.g. {"lr": [1e-3, 3e-3], "latent_dim": [8, 16]}'
        )
    fields = {item.name for item in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for field, choices in space.items():
        if field not in fields:
            raise ParameterError(
                f"space names {field!r}, which is not a TrainConfig field; the fields are "
                f"{', '.join(sorted(fields))}"
            )
        if field in _FIXED:
            raise ParameterError(f"space cannot set {field!r}: it is set by {_FIXED[field]}")
        if isinstance(choices, Domain):
            _check_value(base, field, choices.sample())
            out[field] = choices
        elif isinstance(choices, Mapping) and set(choices) == {"grid_search"}:  # tune.grid_search
            for value in choices["grid_search"]:
                _check_value(base, field, value)
            out[field] = dict(choices)
        elif isinstance(choices, list | tuple) and not isinstance(choices, str):
            if not choices:
                raise ParameterError(f"space[{field!r}] is an empty list of choices")
            for value in choices:
                _check_value(base, field, value)
            out[field] = ray_tune.choice(list(choices))
        else:
            raise ParameterError(
                f"space[{field!r}] must be a list of choices or a Ray Tune search domain "
                f"(e.g. tune.loguniform(1e-4, 1e-2)), got {type(choices).__name__}"
            )
    return out


def _check_value(base: TrainConfig, field: str, value: Any) -> None:
    try:
        base.replace(**{field: value})
    except ParameterError as exc:
        raise ParameterError(f"space[{field!r}]: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"space[{field!r}]: {value!r} is not a TrainConfig.{field}: {exc}"
        ) from None


def _trial(
    values: dict[str, Any], source: Any, base: dict[str, Any], max_epochs: int, folder: str
) -> None:
    """One trial, in its Ray worker: labkit's ``train``, each epoch reported to Tune."""
    from ray import tune as ray_tune

    from labkit.vae.checkpoints import CheckpointStore
    from labkit.vae.train import train

    trial_id = ray_tune.get_context().get_trial_id()
    config = TrainConfig(**{**base, **values, "epochs": max_epochs, "num_workers": 1})
    checkpoints = Path(folder) / trial_id
    resume = bool(CheckpointStore(checkpoints).epochs())

    def report(record: dict[str, Any]) -> None:
        ray_tune.report({k: record.get(k) for k in REPORTED})

    before = os.environ.get(TRACKING_SWITCH_ENV)
    os.environ[TRACKING_SWITCH_ENV] = "off"  # the sweep's process logs this trial
    try:
        train(
            source,
            config,
            cluster=False,
            resume=resume,
            checkpoint_dir=checkpoints,
            progress=False,
            callback=report,
        )
    finally:
        if before is None:
            os.environ.pop(TRACKING_SWITCH_ENV, None)
        else:
            os.environ[TRACKING_SWITCH_ENV] = before


class _Sweep:
    def __init__(self, source, param_space, base, num_samples, scheduler, metric, max_epochs, seed):
        self.source, self.param_space, self.base = source, param_space, base
        self.num_samples, self.scheduler, self.metric = num_samples, scheduler, metric
        self.max_epochs, self.seed = max_epochs, seed

    def run(self, folder: Path, resume: bool, tracker, progress, callback, stop) -> TuneResult:
        from ray import tune as ray_tune
        from ray.tune.search import BasicVariantGenerator
        from tqdm.auto import tqdm

        tracking = SweepTracking(tracker, folder)
        tracking.open(
            name=folder.name,
            params={
                **{f"space.{k}": str(v) for k, v in self.param_space.items()},
                "num_samples": self.num_samples,
                "scheduler": self.scheduler or "fifo",
                "metric": self.metric,
                "max_epochs": self.max_epochs,
                **({"seed": self.seed} if self.seed is not None else {}),
            },
            tags={**data_identity(self.source), "labkit.sweep_dir": str(folder)},
        )
        from labkit.vae.tune_watch import StopOnEvent, Watch

        record = _SweepRecord(folder, self.num_samples, tracking)
        record.write("running")
        bar = tqdm(total=self.num_samples, desc="sweep", unit="trial", disable=not progress)
        watch = Watch(tracking, callback, bar, self.max_epochs)
        trainable = self._trainable(folder)
        restoring = resume and ray_tune.Tuner.can_restore(str(folder))
        try:
            if restoring:
                tuner = ray_tune.Tuner.restore(
                    str(folder), trainable, resume_unfinished=True, param_space=self.param_space
                )
                # Tune restores its run config from the sweep's folder, where these two were
                # saved inert (they hold this session's bar, runs and event): give them back
                restored = tuner._local_tuner.get_run_config()
                restored.callbacks, restored.stop = [watch], StopOnEvent(stop)
            else:
                tuner = ray_tune.Tuner(
                    trainable,
                    param_space=self.param_space,
                    tune_config=ray_tune.TuneConfig(
                        metric=self.metric,
                        mode="min",
                        num_samples=self.num_samples,
                        scheduler=self._scheduler(),
                        search_alg=BasicVariantGenerator(random_state=self.seed),
                        reuse_actors=True,  # a new trial in a warm process: no import per trial
                    ),
                    run_config=ray_tune.RunConfig(
                        name=folder.name,
                        storage_path=str(folder.parent),
                        verbose=0,
                        stop=StopOnEvent(stop),
                        callbacks=[watch],
                    ),
                )
            grid = tuner.fit()
            result = self._result(grid, folder, tracking, stop.is_set() or _cut_short(grid))
        except BaseException:
            tracking.close(None, interrupted=True)
            record.write("interrupted")
            raise
        finally:
            bar.close()
        status = "interrupted" if result.stopped else "done"
        record.write(status, result.best_result, trials=len(result.trials))
        return result

    def _trainable(self, folder: Path):
        from ray import tune as ray_tune

        cpus = self.base.threads or 1
        trial = ray_tune.with_parameters(
            _trial,
            source=self.source,
            base=self.base.to_dict(),
            max_epochs=self.max_epochs,
            folder=str(folder / CHECKPOINTS),
        )
        return ray_tune.with_resources(trial, {"cpu": cpus})

    def _scheduler(self):
        """ASHA with its first rung at 1/8 of max_epochs (see ``grace_period``), keeping the
        best quarter at each rung. Measured in benchmarks/tune.py (random search, 16 trials):
        a rung ranks trials well only on a smooth validation loss (``ema_decay``), and on
        three seeds a reduction of 3 (rungs at 3 and 9 of 24 epochs, not 3 and 12) trained
        as many epochs or more and found the same best trials."""
        if self.scheduler != "asha":
            return None
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="epoch",
            max_t=self.max_epochs,
            grace_period=grace_period(self.max_epochs, self.base.kl_warmup),
            reduction_factor=REDUCTION,
        )

    def _result(self, grid, folder: Path, tracking: SweepTracking, stopped: bool) -> TuneResult:
        frame = grid.get_dataframe()
        finished = [r for r in grid if r.error is None and r.metrics.get(self.metric) is not None]
        if not finished:
            errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error is not None]
            raise TrainingError(
                "no trial of the sweep reported "
                + (f"{self.metric}: {errors[0]}" if errors else self.metric)
            )
        best = min(finished, key=lambda r: r.metrics[self.metric])
        best_result = {
            "trial_id": best.metrics.get("trial_id"),
            **{k: best.metrics.get(k) for k in REPORTED},
        }
        tracking.close(best_result, interrupted=stopped)
        values = {k: v for k, v in best.config.items() if k in self.param_space}
        return TuneResult(
            best_config=self.base.replace(**values, epochs=self.max_epochs),
            best_result=best_result,
            trials=frame,
            path=folder,
            stopped=stopped,
            mlflow_run_id=tracking.parent_id,
        )


def grace_period(max_epochs: int, kl_warmup: int) -> int:
    """ASHA's first rung: 1/8 of ``max_epochs`` (rungs at 1/8 and 1/2 with reduction 4), and
    not before the KL weight is final, so the rung ranks trials on the loss they are trained
    for, not a mid-warm-up one (capped at ``max_epochs``)."""
    return min(max_epochs, max(1, max_epochs // 8, kl_warmup))


def _cut_short(grid) -> bool:
    """Whether Tune ended with trials neither finished nor failed (Ctrl-C stops it so)."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return any(trial.status not in ("TERMINATED", "ERROR") for trial in trials)


class _SweepRecord:
    """The sweep's ``sweep.json``: what ``%labkit runs`` and the sidebar list."""

    def __init__(self, folder: Path, num_samples: int, tracking: SweepTracking):
        from labkit.runs.bundle import now_iso

        self.folder, self.num_samples, self.tracking = folder, num_samples, tracking
        earlier = self.folder / SWEEP_FILE
        self.created = now_iso()
        if earlier.is_file():  # a restored sweep keeps the day it began
            with contextlib.suppress(ValueError):
                self.created = json.loads(earlier.read_text()).get("created") or self.created

    def write(
        self, status: str, best: dict[str, Any] | None = None, trials: int | None = None
    ) -> None:
        from labkit.runs.bundle import write_json

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(
            self.folder / SWEEP_FILE,
            {
                "kind": "sweep",
                "name": self.folder.name,
                "created": self.created,
                "status": status,
                "num_samples": self.num_samples,
                "trials": trials,
                "best": best,
                "mlflow": self.tracking.reference(),
            },
        )
