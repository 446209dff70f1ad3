"""labkit.record: JSON values kept in a notebook's outputs, read back without re-running."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pytest

import labkit
from labkit.errors import BundleError, ParameterError
from labkit.runs import RECORD_MIME, read_records
from labkit.runs.records import to_jsonable


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (3, 3),
        (2.5, 2.5),
        ("text", "text"),
        (None, None),
        (True, True),
        ([1, (2, 3)], [1, [2, 3]]),
        ({"a": {"b": [1.5]}, 3: "x"}, {"a": {"b": [1.5]}, "3": "x"}),
        (np.float32(0.5), 0.5),
        (np.int64(7), 7),
        (np.bool_(True), True),
        (np.arange(4).reshape(2, 2), [[0, 1], [2, 3]]),
        ([math.nan, math.inf, -math.inf], ["NaN", "Infinity", "-Infinity"]),
        (np.array([np.nan, 1.0]), ["NaN", 1.0]),
    ],
)
def test_values_become_plain_json(value, stored):
    converted = to_jsonable(value)
    assert converted == stored
    assert type(converted) is type(stored)


def test_values_that_would_lose_meaning_are_refused_naming_the_record():
    import astropy.units as u

    with pytest.raises(ParameterError, match=r"record 'flux'.*Quantity"):
        labkit.record("flux", 3 * u.Jy)
    with pytest.raises(ParameterError, match=r"record 'obj'\[0\]: a object cannot be recorded"):
        labkit.record("obj", [object()])
    with pytest.raises(ParameterError, match="non-empty string"):
        labkit.record("", 1)


def test_record_is_a_display_output_read_back_from_the_notebook(tmp_path, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    shell.display_pub.publish = lambda data, metadata=None, **kw: shown.append(data)
    labkit.record("loss", np.float64(0.25))
    labkit.record("loss", 0.125)  # the last one wins
    labkit.record("shape", [2, 3])
    del shell.display_pub.publish
    assert shown[0] == {RECORD_MIME: {"name": "loss", "value": 0.25}, "text/plain": "loss = 0.25"}

    nb = nbformat.v4.new_notebook()
    outputs = [nbformat.v4.new_output("display_data", data=data) for data in shown]
    nb.cells = [nbformat.v4.new_code_cell("...", outputs=outputs)]
    path = tmp_path / "run" / "notebook.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    assert read_records(path) == {"loss": 0.125, "shape": [2, 3]}
    assert read_records(path.parent) == read_records(path)
    with pytest.raises(BundleError, match="no executed notebook"):
        read_records(tmp_path)
