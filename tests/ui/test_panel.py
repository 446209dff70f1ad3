"""The sidebar in a real JupyterLab: start a Dask cluster from its button, watch the card turn
running, insert the connect cell into a notebook and run it; stopping the server stops it."""

from __future__ import annotations

import nbformat

from labkit.clusters.registry import read_registry
from labkit.runs import freeze
from labkit.server.processes import pid_alive
from tests.conftest import free_port, stop_process, wait_for

CARD = "#labkit-clusters .labkit-card"


def test_panel_starts_dask_and_connects_a_notebook(lab, browser_page, tmp_path):
    try:
        _drive_the_panel(lab, browser_page, tmp_path)
    except Exception:
        browser_page.screenshot(path=str(tmp_path / "failure.png"))
        raise


def _drive_the_panel(lab, page, tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(""))
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(notebook, lab.root / "analysis.ipynb")
    freeze(lab.root / "analysis.ipynb", name="analysis-v1", out=lab.root / "runs")

    page.goto(lab.page_url("/lab/tree/analysis.ipynb"), wait_until="domcontentloaded")
    page.locator(".jp-SideBar [data-id='labkit-clusters']").click(timeout=90_000)
    panel = page.locator("#labkit-clusters")
    panel.locator(".labkit-empty").first.wait_for(timeout=30_000)
    # The Runs section lists what GET /labkit/api/runs returns.
    run = panel.locator(".labkit-run[data-kind='bundle']")
    run.wait_for(timeout=30_000)
    assert "analysis-v1" in run.inner_text() and "runs/analysis-v1" in run.inner_text()

    # Start a one-worker Dask cluster from the panel and watch its card become running.
    panel.locator(".labkit-workers-input").fill("1")
    panel.locator(".labkit-start-dask").click()
    card = page.locator(f"{CARD}[data-cluster-id='dask-1']")
    card.and_(page.locator("[data-status='running']")).wait_for(timeout=120_000)
    assert card.locator(".labkit-card-name").inner_text() == "dask-1"
    assert card.locator(".labkit-stat-value").first.inner_text() == "1"
    link = card.locator(".labkit-dashboard-link").get_attribute("href")
    assert link == "/labkit/dashboard/dask-1/status"  # served through the Jupyter server

    # A remote address where nothing listens: the card says so; nothing hangs.
    panel.locator(".labkit-address-input").fill(f"tcp://127.0.0.1:{free_port()}")
    panel.locator(".labkit-name-input").fill("far-away")
    panel.locator(".labkit-register-button").click()
    remote = page.locator(f"{CARD}[data-cluster-id='far-away']")
    remote.and_(page.locator("[data-status='unreachable']")).wait_for(timeout=30_000)
    assert "127.0.0.1" in remote.locator(".labkit-card-error").inner_text()

    # Insert `%labkit connect dask-1` into the notebook and run it in the kernel.
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.click()
    card.locator(".labkit-insert").click()
    editor = page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-InputArea-editor")
    page.wait_for_function(
        "() => document.querySelector('.jp-Notebook .jp-Cell .cm-content')"
        "?.textContent.includes('%labkit connect dask-1')",
        timeout=10_000,
    )
    assert "%load_ext labkit" in editor.inner_text()
    page.locator(".jp-Notebook").first.press("Shift+Enter")
    output = page.locator(".jp-OutputArea-output").filter(has_text="dask cluster")
    output.first.wait_for(timeout=120_000)
    assert "tcp://127.0.0.1" in output.first.inner_text()
    page.locator(".jp-Cell .jp-InputPrompt").filter(has_text="[1]").wait_for(timeout=60_000)

    screenshot = tmp_path / "labkit-panel.png"
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000

    # The dashboard opens in a lab tab, through the Jupyter server's proxy.
    card.locator(".labkit-open-dashboard").click()
    frame = page.locator(".labkit-dashboard iframe")
    frame.wait_for(timeout=10_000)
    assert frame.get_attribute("src") == link
    page.locator(".lm-TabBar-tab").filter(has_text="dask-1 dashboard").wait_for()

    # Stopping the Jupyter server stops the cluster it started.
    [entry] = [e for e in read_registry(lab.runtime_dir / "labkit-clusters.json") if e.managed]
    assert entry.pids and all(pid_alive(pid) for pid in entry.pids)
    stop_process(lab.proc)
    wait_for(lambda: not any(pid_alive(pid) for pid in entry.pids), 30, "cluster processes")
