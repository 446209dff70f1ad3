"""SIGUSR1 while ``labkit.vae.train`` runs in-process: a checkpoint part way through the
epoch, which ``resume=True`` continues from exactly (SLURM's warning before walltime)."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from labkit.vae import TrainConfig, train
from labkit.vae.checkpoints import PARTIAL_FILE, CheckpointStore

CONFIG = TrainConfig(
    latent_dim=4, hidden=(64, 32), batch_size=32, epochs=3, kl_warmup=2, patience=None
)


class Killed(Exception):
    """What the walltime does to a training run, just after its checkpoint."""


def test_sigusr1_checkpoints_at_once_and_a_resumed_run_continues_from_it(
    rest_spectra, tmp_path, monkeypatch
):
    whole = train(rest_spectra, CONFIG, "in-process", checkpoint_dir=tmp_path / "a", progress=False)

    def warn(record):  # SLURM's warning arrives during the first epoch's report
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGUSR1)

    written = CheckpointStore.write_partial

    def write_then_die(self, state):
        written(self, state)
        raise Killed

    monkeypatch.setattr(CheckpointStore, "write_partial", write_then_die)
    before = signal.getsignal(signal.SIGUSR1)
    run = tmp_path / "b"
    with pytest.raises(Killed):
        train(rest_spectra, CONFIG, "in-process", checkpoint_dir=run, progress=False, callback=warn)
    assert signal.getsignal(signal.SIGUSR1) is before  # the handler was put back
    partial = CheckpointStore(run).latest_state()
    assert (partial["epoch"], partial["step"]) == (1, 1)  # after the next batch

    monkeypatch.undo()
    resumed = train(rest_spectra, CONFIG, "in-process", checkpoint_dir=run, resume=True,
                    progress=False)  # fmt: skip
    assert not (run / PARTIAL_FILE).exists()  # its epoch has ended
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    np.testing.assert_array_equal(
        resumed.model.encode(rest_spectra), whole.model.encode(rest_spectra)
    )


def test_training_in_another_thread_leaves_signals_alone(rest_spectra, tmp_path):
    seen = []

    def look(_record):
        seen.append(signal.getsignal(signal.SIGUSR1))

    before = signal.getsignal(signal.SIGUSR1)
    config = CONFIG.replace(epochs=1)
    worker = threading.Thread(
        target=train,
        args=(rest_spectra, config, "in-process"),
        kwargs={"checkpoint_dir": tmp_path, "progress": False, "callback": look},
    )
    worker.start()
    worker.join(120)
    assert not worker.is_alive() and seen == [before]
