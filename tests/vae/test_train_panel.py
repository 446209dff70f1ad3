"""The training launcher widget, driven from Python as a notebook user would click it."""

from __future__ import annotations

import ipywidgets as widgets
import pytest
from IPython.core.interactiveshell import InteractiveShell

from labkit.errors import ParameterError
from labkit.vae import TrainConfig
from labkit.widgets import TrainPanel
from tests.conftest import wait_for

SMALL = TrainConfig(latent_dim=4, hidden=(64, 32), batch_size=32, epochs=3, kl_warmup=1)


def test_panel_builds_and_trains_with_live_curve_and_reconstructions(rest_spectra, tmp_path):
    namespace = {"rest": rest_spectra, "numbers": [1, 2, 3], "_hidden": rest_spectra}
    panel = TrainPanel(namespace=namespace, config=SMALL, checkpoint_dir=str(tmp_path))
    assert isinstance(panel.widget, widgets.VBox)
    assert panel.data.options == ("rest",) and panel.data.value == "rest"
    assert panel.latent.value == 4 and panel.epochs.value == 3
    assert panel.widget._repr_mimebundle_() is not None

    panel.latent.value, panel.epochs.value, panel.backend.value = 3, 2, "in-process"
    panel.start_button.click()
    result = panel.wait(timeout=120)
    assert panel.error is None, panel.error
    assert result is not None and result.model.latent_dim == 3
    assert [r["epoch"] for r in panel.history] == [1, 2]
    assert panel.progress.value == 2 and panel.progress.max == 2
    curve = panel.loss_pane.object
    assert sorted(curve.keys()) == ["loss", "val_loss"]
    assert list(curve["loss"].dframe()["epoch"]) == [1, 2]
    assert len(panel.recon_pane.object) == 3  # three spectra over their reconstructions
    assert "finished after epoch 2" in panel.status.value
    assert not panel.start_button.disabled and panel.stop_button.disabled


def test_stop_ends_the_run_after_the_current_epoch(rest_spectra, tmp_path):
    panel = TrainPanel(
        namespace={"rest": rest_spectra},
        config=SMALL.replace(epochs=500),
        checkpoint_dir=str(tmp_path),
    )
    panel.backend.value = "in-process"
    panel.start()
    assert panel.running and panel.stop_button.disabled is False
    with pytest.raises(ParameterError, match="already running"):
        panel.start()
    wait_for(lambda: panel.history, 60, "the first epoch")
    panel.stop_button.click()
    result = panel.wait(timeout=60)
    assert not panel.running
    assert result.stopped and 1 <= len(result.history) < 500
    assert "stopped after epoch" in panel.status.value


def test_labkit_train_magic_shows_the_panel(rest_spectra):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "labkit")
    shell.user_ns["rest"] = rest_spectra
    panel = shell.run_line_magic("labkit", "train rest --latent 5 --epochs 7 --backend dask")
    assert isinstance(panel, TrainPanel)
    assert (panel.data.value, panel.latent.value, panel.epochs.value) == ("rest", 5, 7)
    assert panel.backend.value == "dask"
    with pytest.raises(ParameterError, match="'missing' is not a preprocessed Spectra"):
        shell.run_line_magic("labkit", "train missing")
    with pytest.raises(ParameterError, match="latent must be between 1 and 512, got 0"):
        shell.run_line_magic("labkit", "train rest --latent 0")
