"""Data-parallel training on a Ray cluster through Ray Train (``TorchTrainer`` + DDP).

Each Ray Train worker reads the spectra from Ray's object store, trains on its own shard of
every epoch, and DDP averages the gradients. Rank 0 sends each epoch's record and packed
training state to a small channel actor; the calling process drains it, so checkpoints land in
its own ``checkpoint_dir`` even when the workers run on other machines, and the loss curve
updates live. A stop request travels the other way through the same actor.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import TrainingError
from labkit.vae.config import TrainConfig
from labkit.vae.job import TrainJob

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 120.0


class _Channel:
    """Epoch reports from rank 0 to the caller, and a stop flag from the caller to all ranks."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.stop = False

    def put(self, report: dict[str, Any]) -> None:
        self.reports.append(report)

    def drain(self) -> list[dict[str, Any]]:
        reports, self.reports = self.reports, []
        return reports

    def request_stop(self) -> None:
        self.stop = True

    def stop_requested(self) -> bool:
        return self.stop


def _worker_loop(setup: dict[str, Any]) -> None:
    """Runs in every Ray Train worker process."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from labkit.vae import loop

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(setup["threads"])
    flux, weight, state = ray.get([setup["flux"], setup["weight"], setup["state"]])
    channel = setup["channel"]
    config = TrainConfig.from_dict(setup["config"])
    device = ray.train.torch.get_device() if setup["use_gpu"] else torch.device("cpu")

    loop.fit(
        flux,
        weight,
        setup["train_index"],
        setup["val_index"],
        config,
        loop.unpack(state),
        device=device,
        emit=lambda report: ray.get(channel.put.remote(report)),
        should_stop=lambda: ray.get(channel.stop_requested.remote()),
        rank=rank,
        world=world,
        wrap=ray.train.torch.prepare_model,
    )


def check_driver() -> None:
    """Ray Train starts its controller from a driver; a Ray Client session cannot host it."""
    import ray

    if not ray.is_initialized():
        raise TrainingError("Ray is not initialised in this process; connect with labkit.connect")
    try:
        from ray.util.client import ray as client_ray

        is_client = client_ray.is_connected()
    except ImportError:  # pragma: no cover
        is_client = False
    if is_client:
        raise TrainingError(
            "Ray Train needs a driver connection to the cluster, not a Ray Client (ray://) "
            "one: connect to the head's GCS address instead, e.g. "
            "labkit.connect('HOST:6379', backend='ray')"
        )


def placement(config: TrainConfig, cluster) -> tuple[int, bool, int]:
    """(CPUs per worker, use GPU, torch threads per worker), refused when they cannot fit."""
    resources = cluster.resources()
    cpus, gpus = int(resources["cpus"]), int(resources["gpus"])
    workers = config.num_workers
    if config.device == "cpu":
        use_gpu = False
    elif config.device == "auto":
        use_gpu = gpus >= workers
    else:
        use_gpu = True
        if gpus < workers:
            raise TrainingError(
                f"TrainConfig(device={config.device!r}, num_workers={workers}) needs {workers} "
                f"GPUs, the Ray cluster at {cluster.address} has {gpus}"
            )
    if cpus < workers:
        raise TrainingError(
            f"TrainConfig.num_workers={workers} needs {workers} CPUs, the Ray cluster at "
            f"{cluster.address} has {cpus}; lower num_workers or scale the cluster"
        )
    per_worker = max(1, cpus // workers)
    threads = config.threads or per_worker
    return per_worker, use_gpu, threads


def run_on_ray(
    job: TrainJob,
    emit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    cluster,
    storage: Path,
) -> None:
    """Train ``job`` with ``config.num_workers`` Ray Train workers; blocks until it ends."""
    import ray
    from ray.train import LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_driver()
    cpus, use_gpu, threads = placement(job.config, cluster)
    channel = ray.remote(num_cpus=0)(_Channel).remote()
    setup = {
        "flux": ray.put(job.flux),
        "weight": ray.put(job.weight),
        "state": ray.put(job.state),
        "train_index": job.train_index,
        "val_index": job.val_index,
        "config": job.config.to_dict(),
        "channel": channel,
        "threads": threads,
        "use_gpu": use_gpu,
    }
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=setup,
        scaling_config=ScalingConfig(
            num_workers=job.config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"labkit-vae-{uuid.uuid4().hex[:8]}",
            storage_path=str(storage.resolve()),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as exc:  # handed to the calling thread
            outcome["error"] = exc

    runner = threading.Thread(target=fit, name="labkit-ray-train", daemon=True)
    runner.start()
    try:
        stop_sent = False
        while runner.is_alive():
            for report in ray.get(channel.drain.remote()):
                emit(report)
            if stop.is_set() and not stop_sent:
                ray.get(channel.request_stop.remote())
                stop_sent = True
            runner.join(POLL_SECONDS)
        for report in ray.get(channel.drain.remote()):
            emit(report)
    except KeyboardInterrupt:
        _stop_and_wait(channel, runner)
        raise
    finally:
        ray.kill(channel)
    if "error" in outcome:
        raise TrainingError(f"Ray Train failed: {_reason(outcome['error'])}") from outcome["error"]


def _stop_and_wait(channel, runner: threading.Thread) -> None:
    import ray

    ray.get(channel.request_stop.remote())
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while runner.is_alive() and time.monotonic() < deadline:
        runner.join(POLL_SECONDS)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    # Ray wraps the worker's exception; its last line is the original message
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
