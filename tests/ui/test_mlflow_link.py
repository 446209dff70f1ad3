"""The sidebar's Runs section links a run to its MLflow page, and the MLflow UI that Jupyter
serves at /mlflow/ (jupyter-server-proxy) shows that run, in real Chromium."""

from __future__ import annotations

import pytest

from labkit.runs import freeze, run
from tests.runs.conftest import write_notebook
from tests.server.test_mlflow_ui import stop_ui
from tests.ui.sidebar import PANEL, open_panel


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The tracking store; its MLflow UI is stopped after JupyterLab (see local_store)."""
    db = tmp_path / "tracking" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.setenv("LABKIT_TRACKING_URI", f"sqlite:///{db}")
    yield db
    stop_ui(db)


def test_a_run_links_to_its_page_in_the_mlflow_ui(store, lab, browser_page, tmp_path):
    notebook = write_notebook(
        lab.root / "study.ipynb",
        ["import labkit", "scale = 2", 'labkit.record("total", 3.5 * scale)'],
        tags={1: ["parameters"]},
    )
    bundle = freeze(notebook, name="study", out=lab.root / "bundles")
    result = run(bundle, {"scale": 3}, progress=False)
    assert result.ok and result.mlflow_run_id
    page = browser_page
    try:
        open_panel(lab, page)
        link = page.locator(f"{PANEL} .labkit-run[data-kind='run'] a.labkit-run-mlflow")
        link.wait_for(timeout=60_000)
        href = link.get_attribute("href")
        assert href.startswith(f"{lab.url}/mlflow/#/experiments/")  # under Jupyter's base URL
        assert href.endswith(f"/runs/{result.mlflow_run_id}")
        page.screenshot(path=str(tmp_path / "sidebar-runs.png"))
        page.goto(href, wait_until="domcontentloaded", timeout=120_000)
        page.get_by_text(result.path.name).first.wait_for(timeout=120_000)  # the run's name
        page.get_by_text("total").first.wait_for(timeout=30_000)  # its recorded metric
        page.screenshot(path=str(tmp_path / "mlflow-run.png"))
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
