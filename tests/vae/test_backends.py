"""Training on real clusters: Ray Train with 2 DDP workers, and a Dask worker."""

from __future__ import annotations

import numpy as np
import pytest

import labkit
from labkit.errors import TrainingError
from labkit.vae import SpectrumVAE, TrainConfig, train
from labkit.vae.checkpoints import CheckpointStore
from labkit.vae.loop import AVERAGED_UPDATES, TRAINED_WEIGHTS

SMALL = TrainConfig(latent_dim=4, hidden=(64, 32), batch_size=32, epochs=2, kl_warmup=1)


def _check_result(result, spectra, backend: str, epochs: int) -> None:
    assert result.backend == backend
    assert [r["epoch"] for r in result.history] == list(range(1, epochs + 1))
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["val_loss"]) for r in result.history)
    loaded = SpectrumVAE.load(result.checkpoint_dir)
    z = loaded.encode(spectra)
    assert z.shape == (len(spectra), SMALL.latent_dim) and np.isfinite(z).all()
    np.testing.assert_array_equal(z, result.model.encode(spectra))


def test_dask_trains_on_a_worker_of_the_active_cluster(rest_spectra, tmp_path):
    with labkit.connect(backend="dask", workers=1):
        # cluster=None: the active cluster
        result = train(rest_spectra, SMALL, checkpoint_dir=tmp_path, progress=False)
    _check_result(result, rest_spectra, "dask", SMALL.epochs)
    # the same seeded loop as in-process: one worker, one thread either way
    here = train(
        rest_spectra,
        SMALL.replace(threads=1),
        "in-process",
        checkpoint_dir=tmp_path / "here",
        progress=False,
    )
    assert [r["loss"] for r in here.history] == [r["loss"] for r in result.history]


def test_ray_train_with_two_workers_on_a_ray_head(rest_spectra, ray_head, tmp_path):
    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    seen = []
    result = train(
        rest_spectra,
        SMALL.replace(num_workers=2, ema_decay=0.9),
        cluster=cluster,
        checkpoint_dir=tmp_path,
        progress=False,
        callback=seen.append,
    )
    _check_result(result, rest_spectra, "ray", SMALL.epochs)
    assert [r["epoch"] for r in seen] == [1, 2]  # reported live, epoch by epoch
    # the kept model is the ranks' moving average; the trained weights are kept beside it
    state = CheckpointStore(tmp_path).latest_state()
    assert TRAINED_WEIGHTS in state and state[AVERAGED_UPDATES] > 0
    assert sorted(p.name for p in tmp_path.glob("epoch-*.pt"))[-1] == "epoch-0002.pt"
    with pytest.raises(TrainingError, match="num_workers=3 needs 3 CPUs, the Ray cluster"):
        train(
            rest_spectra,
            SMALL.replace(num_workers=3),
            cluster=cluster,
            checkpoint_dir=tmp_path / "too-many",
            progress=False,
        )
    _stop_ray_train_coordinator()


def _stop_ray_train_coordinator() -> None:
    """Ray Train leaves a detached coordinator actor behind; the shared head outlives this test."""
    import ray

    ray.kill(ray.get_actor("AutoscalingCoordinator", namespace="AutoscalingCoordinator"))


def test_ray_client_connection_is_refused_with_what_to_do(rest_spectra, ray_head, tmp_path):
    labkit.connect(ray_head.client_address, token_file=ray_head.token_file)
    with pytest.raises(TrainingError, match="needs a driver connection .* GCS address"):
        train(rest_spectra, SMALL, checkpoint_dir=tmp_path, progress=False)
