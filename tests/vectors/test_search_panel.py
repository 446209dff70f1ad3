"""The SearchPanel widget and `%labkit search`, driven from Python over a real index."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell

from labkit.errors import LabkitError
from labkit.vectors import build_index
from labkit.widgets import SearchPanel


@pytest.fixture(scope="module")
def index(model, survey, tmp_path_factory):
    uri = tmp_path_factory.mktemp("panel") / "panel.db"
    with build_index(model, survey, uri, progress=False) as built:
        yield built


def _ids(hits):
    return [h.id for h in hits]


def test_panel_answers_a_query_and_draws_it(index, survey, model):
    panel = SearchPanel(index, spectra=survey, model=model, k=4)
    assert panel.class_field == "label"
    target = int(survey.meta["targetid"][10])
    hits = panel.show(target)
    assert _ids(hits) == _ids(index.search(target, k=4)[0])
    assert panel.neighbours["id"].tolist() == [target, *_ids(hits)]
    assert all(str(i) in panel.table.value for i in [target, *_ids(hits)])
    assert f"4 nearest neighbours of {target}" in panel.status.value

    curves = panel.spectra_pane.object
    assert len(curves.traverse(lambda e: e, [hv.Curve])) == 5
    query_curve = curves.traverse(lambda e: e, [hv.Curve])[-1]
    row = int(np.flatnonzero(np.asarray(survey.meta["targetid"]) == target)[0])
    np.testing.assert_allclose(query_curve.dimension_values("y"), survey.flux[row], rtol=1e-6)

    vector = index.get(target)[0]["vector"]
    np.testing.assert_allclose(panel.query_xy, panel.projection.transform(vector)[0])
    star = panel.map_pane.object.traverse(lambda e: e, [hv.Scatter])[-1]
    assert star.label == "query"
    np.testing.assert_allclose(
        [star.dimension_values("pc1")[0], star.dimension_values("pc2")[0]], panel.query_xy
    )
    for pane in (panel.spectra_pane, panel.map_pane):
        assert hv.render(pane.object, backend="bokeh") is not None  # builds real bokeh models
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_widgets_drive_the_query_and_filters(index, survey):
    panel = SearchPanel(index, spectra=survey, k=5)
    target = int(survey.meta["targetid"][3])
    panel.target.value = str(target)  # typing an id
    assert panel.query_id == target

    panel.classes.value = ("qso", "odd")
    assert panel.query_filter() == 'label in ["qso", "odd"]'
    assert panel.hits and all(h.meta["label"] in ("qso", "odd") for h in panel.hits)
    panel.z_range.value = (1.0, 2.0)
    assert all(1.0 <= h.meta["z"] <= 2.0 for h in panel.hits)
    assert _ids(panel.hits) == _ids(index.search(target, k=5, filter=panel.query_filter())[0])

    panel.k.value = 2
    assert len(panel.hits) <= 2

    anomaly = panel.anomalies.options[1][1]  # the most anomalous spectrum
    assert anomaly == index.top_anomalies(1)[0]["id"]
    panel.anomalies.value = anomaly
    assert panel.query_id == anomaly

    before = list(panel.hits)
    panel.target.value = "424242"  # an id the index lacks: a message, not a traceback
    assert "UnknownIdError" in panel.status.value and "424242" in panel.status.value
    assert panel.hits == before
    panel.target.value = "not-a-number"
    assert "whole number" in panel.status.value


def test_without_spectra_it_draws_model_spectra_or_latents(index, survey, model):
    target = int(survey.meta["targetid"][0])
    decoded = SearchPanel(index, model=model, k=2)
    decoded.show(target)
    curve = decoded.spectra_pane.object.traverse(lambda e: e, [hv.Curve])[-1]
    assert len(curve.dimension_values("y")) == model.n_pixels
    bare = SearchPanel(index, k=2)
    bare.show(target)
    curve = bare.spectra_pane.object.traverse(lambda e: e, [hv.Curve])[-1]
    np.testing.assert_allclose(curve.dimension_values("y"), index.get(target)[0]["vector"])


def test_labkit_search_magic(index, survey, capsys):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "labkit")
    shell.user_ns.update(my_index=index, survey=survey)
    panel = shell.run_line_magic("labkit", "search my_index --spectra survey --k 3")
    assert isinstance(panel, SearchPanel) and panel.index is index and panel.spectra is survey
    assert len(panel.show(int(survey.meta["targetid"][1]))) == 3
    by_uri = shell.run_line_magic("labkit", f"search {index.endpoint.path}")
    assert by_uri.index.count() == index.count()
    by_uri.index.close()

    del shell.user_ns["my_index"]
    result = shell.run_cell("%labkit search")
    assert isinstance(result.error_in_exec, LabkitError)
    assert "no SpectrumIndex in this notebook" in capsys.readouterr().err
