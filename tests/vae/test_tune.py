"""Ray Tune sweeps of the VAE: a bad space is refused before any trial, Dask is refused, a
sweep on a real Ray head finds its best trial, is one MLflow parent with a child per trial,
and an interrupted sweep is restored and finished."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import tune as ray_tune

import labkit
from labkit.errors import ParameterError, UnsupportedOperationError
from labkit.runs import list_runs
from labkit.vae import TrainConfig, tune
from labkit.vae.tune import grace_period
from tests.conftest import start_process, stop_process, wait_for_service

BASE = TrainConfig(latent_dim=4, hidden=(32, 16), batch_size=32, kl_warmup=1, threads=1)
SPACE = {"lr": [3e-4, 3e-3], "latent_dim": [2, 4]}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learning_rate": [1e-3]}, "'learning_rate', which is not a TrainConfig field"),
        ({"latent_dim": [8.5]}, r"space\['latent_dim'\].*whole"),
        ({"latent_dim": ray_tune.loguniform(1e-4, 1e-2)}, r"space\['latent_dim'\]"),
        ({"lr": [-1.0]}, r"space\['lr'\].*TrainConfig.lr"),
        ({"lr": []}, "empty list"),
        ({"lr": 0.001}, r"space\['lr'\] must be a list of choices or a Ray Tune search domain"),
        ({"epochs": [3, 4]}, "set by max_epochs"),
    ],
)
def test_a_bad_space_is_refused_naming_the_field(rest_spectra, space, message, tmp_path):
    with pytest.raises(ParameterError, match=message):
        tune(rest_spectra, space, base=BASE, storage_path=tmp_path, progress=False)


def test_bad_settings_are_refused_before_any_trial(rest_spectra, tmp_path):
    with pytest.raises(ParameterError, match="num_samples"):
        tune(rest_spectra, SPACE, num_samples=0, storage_path=tmp_path)
    with pytest.raises(ParameterError, match="'accuracy' is never reported"):
        tune(rest_spectra, SPACE, metric="accuracy", storage_path=tmp_path)
    with pytest.raises(ParameterError, match="scheduler"):
        tune(rest_spectra, SPACE, scheduler="hyperband", storage_path=tmp_path)
    with pytest.raises(ParameterError, match="no sweep under"):
        tune(rest_spectra, SPACE, storage_path=tmp_path, resume=True)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "sweep.json").write_text('{"kind": "sweep"}')
    with pytest.raises(ParameterError, match="a sweep already ran in .*old: resume=True"):
        tune(rest_spectra, SPACE, storage_path=tmp_path, name="old")


def test_the_first_rung_waits_for_the_kl_weight():
    assert grace_period(16, 2) == 2  # 1/8 of max_epochs
    assert grace_period(30, 5) == 5  # the default warm-up ends after 1/8 of 30 epochs
    assert grace_period(3, 0) == 1
    assert grace_period(4, 10) == 4  # never past max_epochs


def test_tuning_on_dask_says_it_needs_ray(rest_spectra, dask_scheduler, tmp_path):
    cluster = labkit.connect(dask_scheduler.address)
    with pytest.raises(UnsupportedOperationError, match="needs a Ray cluster.*dask"):
        tune(rest_spectra, SPACE, cluster=cluster, storage_path=tmp_path, progress=False)


def test_a_sweep_on_ray_finds_its_best_trial_and_is_tracked(
    rest_spectra, ray_head, tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("LABKIT_TRACKING_URI", uri)
    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    seen: dict[str, list] = {}
    result = tune(
        rest_spectra,
        SPACE,
        num_samples=4,
        max_epochs=3,
        base=BASE,
        cluster=cluster,
        storage_path=tmp_path / "sweeps",
        name="first",
        seed=3,
        progress=False,
        callback=lambda trial, record: seen.setdefault(trial, []).append(record),
    )
    assert len(result.trials) == 4 and len(seen) == 4
    best = min((records[-1]["val_loss"], trial) for trial, records in seen.items() if records)
    assert result.best_result["val_loss"] == pytest.approx(best[0])
    assert result.best_result["trial_id"] == best[1]
    assert result.best_config.epochs == 3
    assert result.best_config.lr in SPACE["lr"] and result.best_config.latent_dim in [2, 4]
    for records in seen.values():  # epochs in order, none past max_epochs
        assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
        assert len(records) <= 3

    [listed] = list_runs(tmp_path / "sweeps")  # what %labkit runs and the sidebar show
    assert listed["kind"] == "sweep" and listed["status"] == "done" and listed["trials"] == 4
    assert listed["mlflow_page"].endswith(f"/runs/{result.mlflow_run_id}")
    client = MlflowClient(uri)
    sweep = client.get_run(result.mlflow_run_id)
    assert sweep.data.tags["labkit.kind"] == "tune"
    assert sweep.data.params["seed"] == "3"  # the sweep can be drawn again
    assert sweep.info.status == "FINISHED"
    children = client.search_runs(
        [sweep.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{sweep.info.run_id}'",
    )
    assert sorted(run.data.tags["labkit.trial_id"] for run in children) == sorted(seen)
    for run in children:
        history = client.get_metric_history(run.info.run_id, "val_loss")
        trial = run.data.tags["labkit.trial_id"]
        assert [m.step for m in history] == [r["epoch"] for r in seen[trial]]
        assert run.data.params["lr"] in {str(v) for v in SPACE["lr"]}


def test_sweeps_with_one_seed_draw_the_same_settings_in_the_same_order(
    rest_spectra, ray_head, tmp_path, monkeypatch
):
    monkeypatch.setenv("LABKIT_TRACKING", "off")
    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    space = {"lr": ray_tune.loguniform(1e-4, 1e-2), "latent_dim": [2, 4]}

    def drawn(name: str, seed: int) -> list[tuple[float, int]]:
        result = tune(
            rest_spectra,
            space,
            num_samples=3,
            max_epochs=1,
            scheduler=None,
            base=BASE,
            cluster=cluster,
            storage_path=tmp_path,
            name=name,
            seed=seed,
            progress=False,
        )
        trials = result.trials.sort_values("trial_id")  # Tune numbers trials as it makes them
        return list(zip(trials["config/lr"], trials["config/latent_dim"], strict=True))

    first = drawn("first", seed=7)
    assert len(set(first)) == 3
    assert drawn("again", seed=7) == first


SWEEP = """
import sys
import labkit
from labkit.spectra import mock_survey, preprocess, rest_grid
from labkit.vae import TrainConfig, tune
from labkit.vae.tune import grace_period
from tests.vae.conftest import GRID

spectra = preprocess(mock_survey(240, anomaly_fraction=0.02, seed=5),
                     grid=rest_grid(*GRID[:2], GRID[2]), cluster=False, progress=False)
address, token, folder = sys.argv[1:]
cluster = labkit.connect(address, backend="ray", token_file=token)
base = TrainConfig(latent_dim=4, hidden=(32, 16), batch_size=32, kl_warmup=1, threads=1)
tune(spectra, {"lr": [3e-4, 3e-3]}, num_samples=2, max_epochs=40, scheduler=None, base=base,
     cluster=cluster, storage_path=folder, name="cut", progress=False)
"""


def test_a_sweep_whose_driver_died_is_restored_and_finished(
    rest_spectra, ray_head, tmp_path, monkeypatch
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("LABKIT_TRACKING_URI", uri)
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    log = tmp_path / "sweep.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    driver = start_process(
        [
            sys.executable,
            str(script),
            ray_head.gcs_address,
            str(ray_head.token_file),
            str(tmp_path),
        ],
        log,
        env=env,
    )
    folder = tmp_path / "cut"
    try:
        # killed once Tune has saved the sweep and some trial has written an epoch
        wait_for_service(
            driver,
            log,
            lambda: (
                list(folder.glob("experiment_state-*.json"))
                and list((folder / "labkit-checkpoints").glob("*/epoch-*.pt"))
            ),
            "the sweep's first epoch",
        )
    finally:
        stop_process(driver)
    cut = {
        trial.name: max(int(p.stem.split("-")[1]) for p in trial.glob("epoch-*.pt"))
        for trial in (folder / "labkit-checkpoints").iterdir()
        if list(trial.glob("epoch-*.pt"))
    }
    assert cut and max(cut.values()) < 40
    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    later: dict[str, list[int]] = {}
    done = tune(
        rest_spectra,
        {"lr": [3e-4, 3e-3]},
        num_samples=2,
        max_epochs=40,
        scheduler=None,
        base=BASE,
        cluster=cluster,
        storage_path=tmp_path,
        name="cut",
        resume=True,
        progress=False,
        callback=lambda trial, record: later.setdefault(trial, []).append(record["epoch"]),
    )
    assert len(done.trials) == 2 and not done.stopped
    for trial, epochs in later.items():  # a trial cut mid-way goes on from its last epoch
        if trial in cut:
            assert epochs[0] <= cut[trial] + 1 and epochs[0] > 1
        assert epochs[-1] == 40
    sweep = MlflowClient(uri).get_run(done.mlflow_run_id)  # the same sweep run, finished
    assert sweep.info.status == "FINISHED"


def test_the_tune_panel_draws_each_trial_and_the_best(rest_spectra, ray_head, tmp_path):
    from labkit.widgets import TunePanel

    cluster = labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    panel = TunePanel(
        namespace={"rest": rest_spectra}, base=BASE, storage_path=str(tmp_path), cluster=cluster
    )
    assert panel.data.value == "rest"
    panel.space.value = "lr: 3e-4, 3e-3"
    panel.samples.value, panel.epochs.value, panel.scheduler.value = 2, 2, "fifo"
    panel.start()
    result = panel.wait(timeout=240)
    assert panel.error is None and result is not None
    assert sorted(panel.records) == sorted(result.trials["trial_id"])
    assert all([r["epoch"] for r in records] == [1, 2] for records in panel.records.values())
    assert panel.curves.object is not None
    assert "best trials so far" in panel.best.value and "val_loss" in panel.best.value
    assert "finished: best lr=" in panel.status.value


def test_the_tune_magic_refuses_a_bad_space_on_its_line():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "labkit")
    result = shell.run_cell('%labkit tune --space "lr 0.001"')
    assert "search space line 1 ('lr 0.001')" in str(result.error_in_exec)
    result = shell.run_cell('%labkit tune --space "lr: 1e-3, 3e-3; latent_dim: 8" --trials 4')
    panel = result.result
    assert panel.space.value == "lr: 1e-3, 3e-3\nlatent_dim: 8" and panel.samples.value == 4
