"""Steps the sidebar's UI tests share: open the panel, wait for polls, read the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import wait_for

PANEL = "#labkit-clusters"


def open_panel(lab, page):
    """Load JupyterLab and show the labkit panel; returns the panel's locator."""
    page.goto(lab.page_url("/lab"), wait_until="domcontentloaded")
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=90_000)
    page.evaluate("() => window.jupyterapp.restored")
    page.locator(".jp-SideBar [data-id='labkit-clusters']").click(timeout=90_000)
    panel = page.locator(PANEL)
    panel.locator(".labkit-empty").first.wait_for(state="attached", timeout=30_000)
    page.wait_for_function(
        f"() => Number(document.querySelector('{PANEL}')?.dataset.polls) >= 1", timeout=30_000
    )
    return panel


def polls(page) -> int:
    """How many times the panel has fetched the cluster list so far."""
    return int(page.locator(PANEL).get_attribute("data-polls") or 0)


def wait_for_polls(page, after: int, count: int = 2, timeout: float = 30_000) -> None:
    """Until the panel has polled ``count`` more times than ``after`` (bounded by ``timeout``)."""
    page.wait_for_function(
        f"n => Number(document.querySelector('{PANEL}').dataset.polls) >= n",
        arg=after + count,
        timeout=timeout,
    )


def cluster(lab, cluster_id: str) -> dict:
    return lab.api(f"/labkit/api/clusters/{cluster_id}")


@contextmanager
def clusters_stopped_after(lab, page, tmp_path: Path) -> Iterator[None]:
    """A UI test's steps: on failure a screenshot in ``tmp_path``; then (always) every cluster
    it started is stopped, and on success the manager must list none within a minute."""
    try:
        yield
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        raise
    finally:
        lab.stop_clusters()
    wait_for(lambda: not lab.api("/labkit/api/clusters"), 60, "no clusters left")
