"""Scaling from a card: what the user types into a card's Scale field survives the panel's
polls (value and focus), and pressing Scale gives the cluster that many workers."""

from __future__ import annotations

from tests.conftest import wait_for
from tests.ui.sidebar import cluster, clusters_stopped_after, open_panel, polls, wait_for_polls


def test_scale_field_survives_polls_and_scales(lab, browser_page, tmp_path):
    page = browser_page
    started = lab.api("/labkit/api/clusters", "POST", {"backend": "dask", "workers": 1})
    cid, name = started["id"], started["name"]
    with clusters_stopped_after(lab, page, tmp_path):
        panel = open_panel(lab, page)
        card = panel.locator(f".labkit-card[data-cluster-id='{cid}']")
        card.and_(page.locator("[data-status='running']")).wait_for(timeout=120_000)
        assert card.locator(".labkit-stat-value").first.inner_text() == "1"

        # The field's accessible name says which cluster it scales.
        field = page.get_by_role("spinbutton", name=f"workers for {name}")
        assert field.input_value() == "1"
        field.click()
        field.press("Control+a")
        field.press_sequentially("3")
        updates = int(card.get_attribute("data-updates"))

        # Two polls later (each updating the card in place), the 3 and the focus are still there.
        wait_for_polls(page, polls(page), 2)
        assert int(card.get_attribute("data-updates")) >= updates + 2
        assert card.locator(".labkit-stat-value").first.inner_text() == "1"
        assert field.input_value() == "3"
        assert field.evaluate("node => node === document.activeElement")

        card.get_by_role("button", name=f"scale {name}").click()
        wait_for(lambda: cluster(lab, cid)["workers"] == 3, 120, f"{name} with 3 workers")
        assert cluster(lab, cid)["requested_workers"] == 3
        # The card catches up, and its field follows the server again.
        page.wait_for_function(
            "id => document.querySelector(`.labkit-card[data-cluster-id='${id}']"
            " .labkit-stat-value`)?.textContent === '3'",
            arg=cid,
            timeout=30_000,
        )
        assert field.input_value() == "3"

        shot = tmp_path / "sidebar.png"
        panel.screenshot(path=str(shot))
        assert shot.stat().st_size > 5_000
