"""labkit's actions are JupyterLab commands: run one from the command palette (opened with
its keyboard shortcut), with the defaults taken from labkit's settings."""

from __future__ import annotations

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import wait_for
from tests.ui.sidebar import clusters_stopped_after, open_panel


def _managed(lab) -> list[dict]:
    return [c for c in lab.api("/labkit/api/clusters") if c["managed"]]


def _search_palette(page, text: str, tries: int = 5):
    """Open the palette with its shortcut and type ``text``; returns the active result.

    While JupyterLab is still settling its layout, a late focus change can close the (modal)
    palette again, so the whole step is tried again, a bounded number of times."""
    for _ in range(tries):
        page.keyboard.press("Control+Shift+C")
        search = page.locator(".lm-CommandPalette-input")
        try:
            page.wait_for_function(
                "() => document.activeElement?.classList.contains('lm-CommandPalette-input')",
                timeout=5_000,
            )
            search.fill("")
            search.press_sequentially(text)
            item = page.locator(".lm-CommandPalette-item.lm-mod-active")
            item.wait_for(timeout=5_000)
            return search, item
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError(f"the command palette did not stay open in {tries} tries")


def _start_from_palette(page, lab, tries: int = 3) -> dict:
    """Run "Start Local Cluster" from the palette; returns the cluster it started.

    Under load a late focus change can take the keyboard away from the palette between the
    last check and Enter; then no command runs and nothing is started, so the step is tried
    again (never while a cluster from an earlier try exists, so at most one is started)."""
    for _ in range(tries):
        search, _ = _search_palette(page, "Start Local Cluster")
        # The palette re-renders its results as the search settles: wait (bounded) for the
        # final render rather than reading whatever is on screen after the last keystroke.
        # The label is read in the same render as the active mark (one evaluation), so a
        # re-render between two reads cannot leave a stale locator waiting; a palette closed
        # by a late focus change meanwhile is the retry case.
        try:
            page.wait_for_function(
                """() => document.querySelector(
                    ".lm-CommandPalette-item.lm-mod-active[data-command='labkit:start-cluster']"
                    + " .lm-CommandPalette-itemLabel")?.textContent === "Start Local Cluster"
                """,
                timeout=30_000,
            )
            header = page.locator(".lm-CommandPalette-header", has_text="labkit").first
            header.wait_for(state="attached", timeout=30_000)  # shown on hover only
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
            continue
        search.press("Enter")
        try:
            [started] = wait_for(lambda: _managed(lab), 20, "a cluster started from the palette")
            return started
        except TimeoutError:
            assert _managed(lab) == []
    raise AssertionError(f"Enter in the command palette started no cluster in {tries} tries")


def test_start_cluster_from_the_command_palette(lab, browser_page, tmp_path):
    page = browser_page
    lab.write_settings("labkit:plugin", {"defaultBackend": "dask", "defaultWorkers": 3})
    with clusters_stopped_after(lab, page, tmp_path):
        panel = open_panel(lab, page)
        # The settings reached the panel (3 is not the schema's default workers): its Workers
        # field, and the default backend's button is the highlighted one.
        page.wait_for_function(
            "() => document.querySelector('.labkit-workers-input')?.value === '3'",
            timeout=30_000,
        )
        assert "labkit-mod-accept" in panel.locator(".labkit-start-dask").get_attribute("class")
        assert _managed(lab) == []

        started = _start_from_palette(page, lab)
        assert started["backend"] == "dask" and started["requested_workers"] == 3
        card = panel.locator(f".labkit-card[data-cluster-id='{started['id']}']")
        card.and_(page.locator("[data-status='running']")).wait_for(timeout=120_000)
        wait_for(
            lambda: lab.api(f"/labkit/api/clusters/{started['id']}")["workers"] == 3,
            60,
            "3 workers",
        )
