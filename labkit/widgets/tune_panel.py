"""``TunePanel``: a Ray Tune sweep of the VAE from a notebook, watched trial by trial.

A thin front door over ``labkit.vae.tune``: the form names the spectra, the search space
(one line per TrainConfig field: ``lr: 3e-4, 1e-3, 3e-3``), trials, epochs and scheduler;
the sweep runs in a background thread; every epoch of every trial redraws the per-trial loss
curves (hvplot, through panel) and the best-trials table; Stop ends the sweep.
"""

from __future__ import annotations

import ast
import html
import threading
from typing import Any

import ipywidgets as widgets

from labkit.errors import ParameterError
from labkit.vae import TrainConfig, TuneResult, tune
from labkit.widgets.background import BackgroundJob
from labkit.widgets.train_panel import _user_namespace, spectra_variables

DEFAULT_SPACE = "lr: 3e-4, 1e-3, 3e-3\nlatent_dim: 8, 16"
SCHEDULERS = [("ASHA (early stopping)", "asha"), ("none (every trial to the end)", "fifo")]
BEST_SHOWN = 5


def parse_space(text: str) -> dict[str, list[Any]]:
    """``field: v1, v2`` lines as ``{field: [v1, v2]}``; values are Python literals."""
    space: dict[str, list[Any]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        field, colon, values = line.partition(":")
        if not colon or not field.strip() or not values.strip():
            raise ParameterError(
                f"search space line {number} ({line.strip()!r}): write it as 'field: v1, v2'"
            )
        try:
            parsed = ast.literal_eval(f"[{values}]")
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"search space line {number}: {values.strip()!r} is not a list of values"
            ) from None
        space[field.strip()] = parsed
    if not space:
        raise ParameterError("the search space is empty: give at least one 'field: v1, v2' line")
    return space


class TunePanel(BackgroundJob):
    """The sweep launcher that ``%labkit tune`` shows.

    From Python as from the screen: set the widgets' values, then ``start()``, ``stop()``,
    ``wait()``. ``result`` holds the ``TuneResult`` when the sweep ends, ``error`` the
    message when it failed; ``records`` every trial's epochs so far.
    """

    stopping = "stopping the sweep…"

    def __init__(
        self,
        namespace: dict[str, Any] | None = None,
        data: str | None = None,
        base: TrainConfig | None = None,
        storage_path: str | None = None,
        cluster: Any = None,
    ):
        import panel as pn

        self.namespace = namespace if namespace is not None else _user_namespace()
        self.base = base or TrainConfig()
        self.storage_path, self.cluster = storage_path, cluster
        self.result: TuneResult | None = None
        self.records: dict[str, list[dict[str, Any]]] = {}
        self._init_job()
        self._lock = threading.Lock()

        self.data = widgets.Dropdown(description="spectra")
        self.space = widgets.Textarea(
            value=DEFAULT_SPACE, description="space", layout={"width": "420px", "height": "80px"}
        )
        self.samples = widgets.BoundedIntText(value=8, min=1, max=10_000, description="trials")
        self.epochs = widgets.BoundedIntText(value=20, min=1, max=10_000, description="epochs")
        self.scheduler = widgets.Dropdown(options=SCHEDULERS, value="asha", description="stop")
        self.start_button = widgets.Button(description="Start sweep", button_style="primary")
        self.stop_button = widgets.Button(description="Stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="trials 0")
        self.status = widgets.HTML()
        self.best = widgets.HTML()
        self.curves = pn.pane.HoloViews(None, sizing_mode="stretch_width", height=300)
        self.start_button.on_click(lambda _: self._start_from_screen())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = widgets.VBox(
            [
                self.data,
                self.space,
                widgets.HBox([self.samples, self.epochs, self.scheduler]),
                widgets.HBox([self.start_button, self.stop_button, self.progress]),
                self.status,
                pn.ipywidget(self.curves),
                self.best,
            ]
        )
        names = spectra_variables(self.namespace)
        self.data.options = names
        self.data.value = names[0] if names else None
        if data is not None:
            if data not in names:
                raise ParameterError(
                    f"{data!r} is not a preprocessed Spectra variable of this notebook "
                    f"(found: {', '.join(names) or 'none'})"
                )
            self.data.value = data
        if not names:
            self._say("no preprocessed spectra in this notebook yet: run labkit.spectra.preprocess")

    def start(self) -> None:
        """Check the form, then run the sweep in a background thread."""
        if self.running:
            raise ParameterError("a sweep is already running; stop it first")
        name = self.data.value
        if name is None or name not in self.namespace:
            raise ParameterError("pick the spectra to tune on (a variable of this notebook)")
        space = parse_space(self.space.value)
        self.result, self.error, self.records = None, None, {}
        self.progress.max, self.progress.value = self.samples.value, 0
        self.curves.object, self.best.value = None, ""
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._say(f"sweeping {len(space)} field(s) on {html.escape(name)}…")
        self._launch(self._run, (self.namespace[name], space), "labkit-tune")

    def _run(self, spectra: Any, space: dict[str, list[Any]]) -> None:
        result = tune(
            spectra,
            space,
            num_samples=self.samples.value,
            scheduler=self.scheduler.value,
            max_epochs=self.epochs.value,
            cluster=self.cluster,
            base=self.base,
            storage_path=self.storage_path,
            progress=False,
            callback=self._on_result,
            stop=self._stop,
        )
        self.result = result
        self.progress.value = self.progress.max
        verb = "stopped" if result.stopped else "finished"
        values = ", ".join(f"{k}={getattr(result.best_config, k)!r}" for k in space)
        self._say(
            f"{verb}: best {values} (val_loss {result.best_result['val_loss']:.4g}); "
            f"sweep in <code>{html.escape(str(result.path))}</code>"
        )

    def _on_result(self, trial: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.records.setdefault(trial, []).append(dict(record))
            frame = self._frame()
        self.progress.description = f"trials {len(self.records)}"
        self.curves.object = _curves(frame)
        self.best.value = _best_table(frame)

    def _frame(self):
        import pandas as pd

        rows = [{"trial": t, **r} for t, records in self.records.items() for r in records]
        return pd.DataFrame(rows)


def _shown_loss(frame) -> str:
    """val_loss where trials hold data out, else the training loss."""
    return "val_loss" if frame["val_loss"].notna().any() else "loss"


def _curves(frame):
    import hvplot.pandas  # noqa: F401  (registers .hvplot)

    column = _shown_loss(frame)
    return frame.hvplot.line(
        x="epoch", y=column, by="trial", ylabel=column, title="trials", responsive=True
    )


def _best_table(frame) -> str:
    column = _shown_loss(frame)
    last = frame.groupby("trial").tail(1).sort_values(column).head(BEST_SHOWN)
    return "<b>best trials so far</b>" + last.to_html(index=False, float_format="%.4g")
