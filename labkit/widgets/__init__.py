"""ipywidgets panels for notebooks; each is a thin front door over the Python API.

Panels load lazily (``from labkit.widgets import TrainPanel``), so importing labkit does not
pull in panel, holoviews and bokeh.
"""

from importlib import import_module
from typing import Any

_PANELS = {
    "TrainPanel": "labkit.widgets.train_panel",
    "TunePanel": "labkit.widgets.tune_panel",
    "SearchPanel": "labkit.widgets.search_panel",
}

__all__ = sorted(_PANELS)


def __getattr__(name: str) -> Any:
    if name in _PANELS:
        return getattr(import_module(_PANELS[name]), name)
    raise AttributeError(f"module 'labkit.widgets' has no attribute {name!r}")
