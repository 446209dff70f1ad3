"""``labkit.vae.train`` in-process: learning, reproducibility, checkpoints, resume, bad input."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from labkit.errors import CheckpointError, ParameterError, TrainingDataError
from labkit.spectra import Spectra
from labkit.vae import SpectrumVAE, TrainConfig, train

SMALL = TrainConfig(latent_dim=4, hidden=(64, 32), batch_size=32, epochs=3, kl_warmup=2)


def test_loss_decreases_and_the_model_loads_and_encodes(rest_spectra, tmp_path):
    result = train(
        rest_spectra,
        SMALL.replace(epochs=6),
        cluster="in-process",
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert result.backend == "in-process"
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert set(result.history[0]) == {"epoch", "loss", "val_loss", "seconds"}
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.85 * losses[0]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.checkpoint_dir == tmp_path.resolve()
    assert json.loads((tmp_path / "history.json").read_text()) == result.history
    loaded = SpectrumVAE.load(tmp_path)
    z = loaded.encode(rest_spectra)
    assert z.shape == (len(rest_spectra), 4) and z.dtype == np.float32
    np.testing.assert_array_equal(z, result.model.encode(rest_spectra))


def test_seeded_runs_are_reproducible(rest_spectra, tmp_path):
    first = train(rest_spectra, SMALL, "in-process", checkpoint_dir=tmp_path / "a", progress=False)
    second = train(rest_spectra, SMALL, "in-process", checkpoint_dir=tmp_path / "b", progress=False)
    assert [r["loss"] for r in first.history] == [r["loss"] for r in second.history]
    np.testing.assert_array_equal(
        first.model.encode(rest_spectra), second.model.encode(rest_spectra)
    )
    other = train(
        rest_spectra,
        SMALL.replace(seed=1),
        "in-process",
        checkpoint_dir=tmp_path / "c",
        progress=False,
    )
    assert [r["loss"] for r in other.history] != [r["loss"] for r in first.history]


@pytest.mark.parametrize("ema_decay", [None, 0.9], ids=["weights", "moving-average"])
def test_resume_after_a_stop_continues_from_the_saved_epoch(rest_spectra, tmp_path, ema_decay):
    config = SMALL.replace(epochs=4, patience=None, ema_decay=ema_decay)
    whole = train(
        rest_spectra, config, "in-process", checkpoint_dir=tmp_path / "whole", progress=False
    )

    stop = threading.Event()
    seen = []

    def stop_after_two(record):
        seen.append(record["epoch"])
        if record["epoch"] == 2:
            stop.set()

    run = tmp_path / "interrupted"
    first = train(
        rest_spectra,
        config,
        "in-process",
        checkpoint_dir=run,
        progress=False,
        callback=stop_after_two,
        stop=stop,
    )
    assert first.stopped
    assert [r["epoch"] for r in first.history] == [1, 2]
    assert sorted(p.name for p in run.glob("epoch-*.pt"))[-1] == "epoch-0002.pt"

    seen.clear()
    resumed = train(
        rest_spectra,
        config,
        "in-process",
        checkpoint_dir=run,
        resume=True,
        progress=False,
        callback=seen.append,
    )
    assert [r["epoch"] for r in seen] == [3, 4]  # only the missing epochs ran
    assert not resumed.stopped
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    # shuffling and sampling noise are seeded per epoch: the same run as without the stop
    for figure in ("loss", "val_loss"):  # the moving average too goes on where it stopped
        assert [r[figure] for r in resumed.history] == [r[figure] for r in whole.history]
    np.testing.assert_array_equal(
        resumed.model.encode(rest_spectra), whole.model.encode(rest_spectra)
    )


def test_a_moving_average_of_the_weights_is_validated_and_kept_without_changing_training(
    rest_spectra, tmp_path
):
    def run(name, **changes):
        config = SMALL.replace(epochs=4, **changes)
        return train(
            rest_spectra, config, "in-process", checkpoint_dir=tmp_path / name, progress=False
        )

    plain, averaged = run("plain"), run("averaged", ema_decay=0.9)
    # the optimizer sees the same batches and noise: the training loss is the same
    assert [r["loss"] for r in averaged.history] == [r["loss"] for r in plain.history]
    # validation measures the average, and the run keeps it (its checkpoint and model.pt)
    assert [r["val_loss"] for r in averaged.history] != [r["val_loss"] for r in plain.history]
    kept = SpectrumVAE.load(tmp_path / "averaged")
    np.testing.assert_array_equal(kept.encode(rest_spectra), averaged.model.encode(rest_spectra))
    assert not np.array_equal(kept.encode(rest_spectra), plain.model.encode(rest_spectra))


def test_resume_refuses_another_architecture_or_grid(rest_spectra, tmp_path):
    train(
        rest_spectra, SMALL.replace(epochs=1), "in-process", checkpoint_dir=tmp_path, progress=False
    )
    with pytest.raises(
        CheckpointError,
        match=r"different architecture \(latent_dim: checkpoint 4, "
        "requested 8",
    ):
        train(
            rest_spectra,
            SMALL.replace(latent_dim=8),
            "in-process",
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )
    coarser = Spectra(
        rest_spectra.wave[::2],
        rest_spectra.flux[:, ::2],
        rest_spectra.ivar[:, ::2],
        rest_spectra.mask[:, ::2],
        rest_spectra.meta,
        frame="rest",
    )
    with pytest.raises(CheckpointError, match="grid mismatch"):
        train(coarser, SMALL, "in-process", checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="holds no epoch checkpoint"):
        train(
            rest_spectra,
            SMALL,
            "in-process",
            checkpoint_dir=tmp_path / "empty",
            resume=True,
            progress=False,
        )


def test_bad_input_is_refused_with_a_clear_error(rest_spectra, tmp_path):
    def attempt(spectra, config=SMALL):
        return train(spectra, config, "in-process", checkpoint_dir=tmp_path, progress=False)

    with pytest.raises(TrainingDataError, match="is empty"):
        attempt(rest_spectra[:0])
    observed = Spectra(
        rest_spectra.wave,
        rest_spectra.flux,
        rest_spectra.ivar,
        rest_spectra.mask,
        rest_spectra.meta,
        frame="observed",
    )
    with pytest.raises(TrainingDataError, match="in the observed frame; run labkit.spectra"):
        attempt(observed)
    linear = np.linspace(3600, 9800, 300)  # an instrument's grid, linear in Å
    raw = Spectra(linear, np.ones((5, 300)), np.ones((5, 300)), frame="rest")
    with pytest.raises(TrainingDataError, match="not on a log-λ grid"):
        attempt(raw)
    broken = rest_spectra[:20].copy()
    broken.flux[3, np.flatnonzero(~broken.mask[3])[0]] = np.nan  # on a usable pixel
    with pytest.raises(
        TrainingDataError,
        match=r"NaN or inf flux in unmasked pixels of 1 "
        r"spectra \(rows 3\), targetid \d+",
    ):
        attempt(broken)
    with pytest.raises(TrainingDataError, match="must be a labkit.spectra.Spectra"):
        attempt(np.ones((10, 10)))
    with pytest.raises(ParameterError, match="latent_dim must be a whole number >= 1, got 0"):
        attempt(rest_spectra, TrainConfig(latent_dim=0))
    with pytest.raises(ParameterError, match="encoder must be one of mlp, conv"):
        TrainConfig(encoder="transformer")
    with pytest.raises(ParameterError, match=r"ema_decay must be None or a number in \(0, 1\)"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ParameterError, match="cluster must be a labkit Cluster"):
        train(rest_spectra, SMALL, cluster="ray-ish", progress=False)
