"""``labkit.record``: keep a result inside the executed notebook, where it can be read back.

A record is a display output with its own MIME type, so it travels with the notebook
(papermill saves outputs), JupyterLab shows its text form, and ``read_records`` finds it
again without re-running anything.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.errors import BundleError, ParameterError

RECORD_MIME = "application/vnd.labkit.record+json"

# JSON has no NaN or infinity, and JupyterLab refuses notebooks that contain them.
_NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def to_jsonable(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON types; numpy scalars and arrays become numbers and lists.

    Non-finite floats become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``.
    Raises ParameterError naming ``where`` for anything else.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else _NONFINITE[repr(float(value))]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ParameterError(f"{where}: dict keys must be strings, got {key!r}")
            out[str(key)] = to_jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    numpy_value = _from_numpy(value, where)
    if numpy_value is not _NOT_NUMPY:
        return numpy_value
    raise ParameterError(
        f"{where}: a {type(value).__name__} cannot be recorded; record numbers, strings, "
        "lists, dicts or numpy values (convert it first, e.g. float(x))"
    )


_NOT_NUMPY = object()


def _from_numpy(value: Any, where: str) -> Any:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return _NOT_NUMPY
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        # Subclasses (astropy Quantity, masked arrays) carry meaning a plain list would drop.
        raise ParameterError(
            f"{where}: a {type(value).__name__} cannot be recorded as it is; record its plain "
            "values (e.g. q.to_value(unit) or np.asarray(x))"
        )
    if isinstance(value, np.ndarray | np.generic):
        return to_jsonable(value.tolist(), where)
    return _NOT_NUMPY


def record(name: str, value: Any) -> None:
    """Keep ``value`` under ``name`` in this notebook's outputs (``labkit.record``).

    Inside a papermill or ``labkit run`` execution the value lands in the executed notebook;
    ``read_records`` and ``results.json`` read it back. Recording a name twice keeps the last.
    """
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"record name must be a non-empty string, got {name!r}")
    payload = {"name": name, "value": to_jsonable(value, f"record {name!r}")}
    shown = json.dumps(payload["value"])
    if len(shown) > 200:
        shown = shown[:197] + "..."
    from IPython.display import display

    display({RECORD_MIME: payload, "text/plain": f"{name} = {shown}"}, raw=True)


def records_in(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """Every record in an executed notebook, in order; a later one wins."""
    found: dict[str, Any] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            payload = output.get("data", {}).get(RECORD_MIME)
            if isinstance(payload, dict) and "name" in payload:
                found[payload["name"]] = payload.get("value")
    return found


def read_records(path: str | os.PathLike) -> dict[str, Any]:
    """Records of an executed notebook, or of a run directory holding ``notebook.ipynb``."""
    import nbformat

    path = Path(path)
    if path.is_dir():
        path = path / "notebook.ipynb"
    if not path.is_file():
        raise BundleError(f"no executed notebook at {path}", path=str(path))
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:
        raise BundleError(f"cannot read the notebook {path}: {exc}", path=str(path)) from exc
    return records_in(notebook)
