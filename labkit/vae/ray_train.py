"""Data-parallel training on a Ray cluster through Ray Train (``TorchTrainer`` + DDP).

Each Ray Train worker reads its own shard of every epoch's chunks, and DDP averages the
gradients: from a store, each worker opens it by its absolute path (so the store must be on a
file system the workers share); in-memory arrays travel through Ray's object store. Rank 0
sends each epoch's record and packed training state to a small channel actor; the calling
process drains it, so checkpoints land in its own ``checkpoint_dir`` even when the workers run
on other machines, and the loss curve updates live. A stop request travels the other way
through the same actor. A worker or host lost mid-run: Ray Train starts the worker group
again on the hosts left (``FailureConfig``), and it resumes from the last reported epoch.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError, TrainingError
from labkit.vae.config import TrainConfig
from labkit.vae.job import TrainJob

POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 120.0
MAX_FAILURES = 3  # worker groups Ray Train may restart (a lost worker or host) before giving up


class _Channel:
    """Epoch reports from rank 0 to the caller, and a stop flag from the caller to all ranks."""

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.stop = False
        self.state: bytes | None = None  # the last epoch's packed state: where a restart resumes
        self.failure: str | None = None

    def put(self, report: dict[str, Any]) -> None:
        self.reports.append(report)
        self.state = report["state"]

    def latest_state(self) -> bytes | None:
        return self.state

    def fail(self, reason: str) -> None:
        """A rank met an error of labkit's own: no restart trains again, the caller raises it."""
        self.failure = reason

    def failed(self) -> str | None:
        return self.failure

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
    channel = setup["channel"]
    # A worker group that Ray Train restarted after losing a worker (or its host) goes on
    # from the last epoch rank 0 reported, not from the start.
    source, state, latest, failure = ray.get(
        [setup["source"], setup["state"], channel.latest_state.remote(), channel.failed.remote()]
    )
    if failure is not None:  # restarted after an error of labkit's own: the caller raises it
        return
    state = latest if latest is not None else state
    config = TrainConfig.from_dict(setup["config"])
    device = ray.train.torch.get_device() if setup["use_gpu"] else torch.device("cpu")

    try:
        loop.fit(
            source,
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
    except LabkitError as exc:  # bad data or settings: a restart would fail the same way
        ray.get(channel.fail.remote(f"{type(exc).__name__}: {exc}"))
        raise  # Ray Train tears the group down (no rank left waiting in a collective)


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
    workdir: Path,
) -> None:
    """Train ``job`` with ``config.num_workers`` Ray Train workers; blocks until it ends.

    Ray Train keeps its own run files under ``workdir/ray`` (the run's checkpoint folder).
    """
    import ray
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check_driver()
    cpus, use_gpu, threads = placement(job.config, cluster)
    # on this process's node, so that losing another host never loses the channel
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    channel = ray.remote(num_cpus=0)(_Channel).options(scheduling_strategy=here).remote()
    setup = {
        "source": ray.put(job.source),  # a StoreSource pickles as its path only
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
            storage_path=str((workdir / "ray").resolve()),
            logging_config=LoggingConfig(log_level="WARNING"),
            failure_config=FailureConfig(max_failures=MAX_FAILURES),
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
        failure = ray.get(channel.failed.remote())
    except KeyboardInterrupt:
        _stop_and_wait(channel, runner)
        raise
    finally:
        ray.kill(channel)
    if "error" in outcome:
        raise TrainingError(f"Ray Train failed: {_reason(outcome['error'])}") from outcome["error"]
    if failure is not None:
        raise TrainingError(f"Ray Train failed: {failure}")


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
