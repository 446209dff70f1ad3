"""``TrainPanel``: train a spectral VAE from a notebook and watch it learn.

A thin front door over ``labkit.vae.train``: the controls pick a ``Spectra`` variable of the
notebook, the latent size, the epochs and where to train; training runs in a background thread
so the kernel stays responsive; each epoch updates a progress bar and an hvplot loss curve (a
panel pane, shown inside the ipywidgets layout through jupyter_bokeh), and at the end a few
spectra are drawn over their reconstructions.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np

from labkit.clusters import ClusterSpec, choose_cluster
from labkit.clusters.spec import IN_PROCESS
from labkit.errors import ParameterError
from labkit.spectra import concatenate
from labkit.spectra.store import is_store
from labkit.vae import TrainConfig, TrainResult, train
from labkit.vae.data import TrainingArrays, training_arrays
from labkit.vae.trainers import TRAINERS
from labkit.widgets.background import BackgroundJob

BACKENDS = [
    ("active cluster, else in-process", "auto"),
    *((record.label, name) for name, record in TRAINERS.items()),
]
SHOWN_RECONSTRUCTIONS = 3


def spectra_variables(namespace: dict[str, Any]) -> list[str]:
    """Names in ``namespace`` bound to rest-frame spectra or spectra stores (what ``train``
    accepts)."""
    names = []
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, type):
            continue
        looks_like = all(hasattr(value, attr) for attr in ("wave", "flux", "ivar", "mask"))
        if is_store(value) or (looks_like and getattr(value, "frame", "rest") == "rest"):
            names.append(name)
    return sorted(names)


def _user_namespace() -> dict[str, Any]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return {}
    shell = get_ipython()
    return shell.user_ns if shell is not None else {}


class TrainPanel(BackgroundJob):
    """The training launcher that ``%labkit train`` shows.

    Drive it from Python as from the screen: set ``data``/``latent``/``epochs``/``backend``
    widgets' values, then ``start()``, ``stop()``, ``wait()``. ``result`` holds the
    ``TrainResult`` when a run ends, ``error`` the message when it failed.
    """

    stopping = "stopping after this epoch…"  # its checkpoints stay resumable

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        data: str | None = None,
        config: TrainConfig | None = None,
        checkpoint_dir: str | None = None,
    ):
        import panel as pn

        self.namespace = namespace if namespace is not None else _user_namespace()
        self.base_config = config or TrainConfig()
        self.checkpoint_dir = checkpoint_dir
        self.result: TrainResult | None = None
        self.error: str | None = None
        self.history: list[dict[str, Any]] = []
        self._init_job()

        self.data = widgets.Dropdown(description="spectra")
        self.refresh_button = widgets.Button(description="↻", layout={"width": "36px"})
        self.latent = widgets.BoundedIntText(
            value=self.base_config.latent_dim, min=1, max=512, description="latent"
        )
        self.epochs = widgets.BoundedIntText(
            value=self.base_config.epochs, min=1, max=10_000, description="epochs"
        )
        self.backend = widgets.Dropdown(options=BACKENDS, value="auto", description="train on")
        self.start_button = widgets.Button(description="Start", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="epoch 0")
        self.status = widgets.HTML()
        self.loss_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=260)
        self.recon_pane = pn.pane.HoloViews(None, sizing_mode="stretch_width")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.start_button.on_click(lambda _: self._start_from_screen())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.data, self.refresh_button]),
                widgets.HBox([self.latent, self.epochs, self.backend]),
                widgets.HBox([self.start_button, self.stop_button, self.progress]),
                self.status,
                pn.ipywidget(self.loss_pane),
                pn.ipywidget(self.recon_pane),
            ]
        )
        self.refresh()
        if data is not None:
            self.set_values(data=data)

    # -- controls -------------------------------------------------------------------------
    def refresh(self, select: str | None = None) -> None:
        """Re-read the notebook's variables for the data picker."""
        names = spectra_variables(self.namespace)
        current = select or self.data.value
        self.data.options = names
        if current in names:
            self.data.value = current
        elif names:
            self.data.value = names[0]
        self.start_button.disabled = not names or self.running
        if not names:
            self._say("no preprocessed spectra in this notebook yet: run labkit.spectra.preprocess")

    def set_values(
        self,
        data: str | None = None,
        latent: int | None = None,
        epochs: int | None = None,
        backend: str | None = None,
    ) -> None:
        """Set controls from code (``%labkit train`` does); ``None`` leaves one as it is."""
        if data is not None:
            if data not in self.data.options:
                raise ParameterError(
                    f"{data!r} is not a preprocessed Spectra variable of this notebook "
                    f"(found: {', '.join(self.data.options) or 'none'})"
                )
            self.data.value = data
        for name, value, low, widget in (
            ("latent", latent, 1, self.latent),
            ("epochs", epochs, 1, self.epochs),
        ):
            if value is None:
                continue
            if value < low or value > widget.max:
                raise ParameterError(f"{name} must be between {low} and {widget.max}, got {value}")
            widget.value = value
        if backend is not None:
            choices = [value for _, value in BACKENDS]
            if backend not in choices:
                raise ParameterError(
                    f"backend must be one of {', '.join(choices)}, got {backend!r}"
                )
            self.backend.value = backend

    def config(self) -> TrainConfig:
        return self.base_config.replace(latent_dim=self.latent.value, epochs=self.epochs.value)

    def start(self) -> None:
        """Start training in a background thread with the values the controls show."""
        if self.running:
            raise ParameterError("training is already running; stop it first")
        name = self.data.value
        if name is None or name not in self.namespace:
            raise ParameterError("pick the spectra to train on (a variable of this notebook)")
        spectra = self.namespace[name]
        config = self.config()
        cluster = self._cluster()
        self.result, self.error, self.history = None, None, []
        self.progress.max, self.progress.value = config.epochs, 0
        self.progress.description = "epoch 0"
        self.loss_pane.object = None
        self.recon_pane.object = None
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._say(f"training on {html.escape(name)} ({len(spectra)} spectra)…")
        self._launch(self._run, (spectra, config, cluster), "labkit-train")

    def _cluster(self) -> ClusterSpec:
        """Where to train, as ``train`` takes it; a backend choice connects here, on the
        notebook's thread, and that cluster stays attached after the run."""
        choice = self.backend.value
        if choice == "auto":
            return None
        if choice == IN_PROCESS:
            return IN_PROCESS
        return choose_cluster(choice)[0]

    # -- the run (background thread) ------------------------------------------------------
    def _run(self, spectra: Any, config: TrainConfig, cluster: ClusterSpec) -> None:
        result = train(
            spectra,
            config,
            cluster=cluster,
            checkpoint_dir=self.checkpoint_dir,
            progress=False,
            callback=self._on_epoch,
            stop=self._stop,
        )
        self.result = result
        self._show_reconstructions(spectra, result)
        last = result.history[-1] if result.history else {}
        verb = "stopped" if result.stopped else "finished"
        self._say(
            f"{verb} after epoch {last.get('epoch', 0)}: loss {last.get('loss', 0):.4g}, "
            f"val_loss {_fmt(last.get('val_loss'))}; model in "
            f"<code>{html.escape(str(result.checkpoint_dir))}</code>"
        )

    def _on_epoch(self, record: dict[str, Any]) -> None:
        import pandas as pd

        self.history.append(record)
        self.progress.value = min(record["epoch"], self.progress.max)
        self.progress.description = f"epoch {record['epoch']}"
        frame = pd.DataFrame(self.history)
        columns = ["loss"] + (["val_loss"] if frame["val_loss"].notna().any() else [])
        self.loss_pane.object = _loss_plot(frame, columns)

    def _show_reconstructions(self, spectra: Any, result: TrainResult) -> None:
        import holoviews as hv

        n = len(spectra)
        rows = np.linspace(0, n - 1, min(SHOWN_RECONSTRUCTIONS, n))
        rows = np.unique(rows.astype(int))
        # row by row: a store reads only the chunks these rows are in
        subset = training_arrays(concatenate([spectra[int(row)] for row in rows]))
        recon = result.model.reconstruct(subset)
        plots = [
            _overlay(subset, i, recon[i], f"spectrum {row}") for i, row in enumerate(rows.tolist())
        ]
        self.recon_pane.object = hv.Layout(plots).cols(1)


def _loss_plot(frame, columns: list[str]):
    import hvplot.pandas  # noqa: F401  (registers .hvplot)

    return frame.hvplot.line(
        x="epoch", y=columns, ylabel="loss per pixel", title="training loss", responsive=True
    )


def _overlay(arrays: TrainingArrays, index: int, model_flux: np.ndarray, label: str):
    import hvplot.pandas  # noqa: F401
    import pandas as pd

    usable = arrays.weight[index] > 0
    frame = pd.DataFrame(
        {
            "wavelength": arrays.wave,
            "input": np.where(usable, arrays.flux[index], np.nan),
            "reconstruction": model_flux,
        }
    )
    return frame.hvplot.line(
        x="wavelength",
        y=["input", "reconstruction"],
        xlabel="rest wavelength (Å)",
        ylabel="flux",
        title=label,
        height=200,
        responsive=True,
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"
