"""Dask on SLURM from the sidebar, in real JupyterLab against a real slurmctld and slurmd:
pick a profile, start, the card shows its jobs, Stop cancels them."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_for
from tests.ui.sidebar import clusters_stopped_after, open_panel


@pytest.fixture
def slurm_profiles(tmp_path, monkeypatch):
    """The site's SLURM profiles as the server reads them (its default for slurm_profiles)."""
    small = {"cores": 1, "memory": "1GiB", "interface": "lo", "log_directory": str(tmp_path)}
    path = tmp_path / "slurm-profiles.json"
    path.write_text(json.dumps({"small": small}))
    monkeypatch.setenv("LABKIT_SLURM_PROFILES", str(path))


def test_start_and_stop_dask_on_slurm_from_the_sidebar(
    slurm, slurm_profiles, lab, browser_page, tmp_path
):
    page = browser_page
    with clusters_stopped_after(lab, page, tmp_path):
        panel = open_panel(lab, page)
        start = panel.get_by_role("button", name="Start Dask on SLURM")
        start.wait_for(timeout=30_000)
        panel.get_by_role("combobox", name="SLURM profile for Dask on SLURM").select_option("small")
        workers = page.get_by_role("spinbutton", name="workers for a new local cluster")
        workers.fill("1")
        start.click()

        [started] = wait_for(lambda: lab.api("/labkit/api/clusters"), 30, "a SLURM cluster")
        card = panel.locator(f".labkit-card[data-cluster-id='{started['id']}']")
        card.and_(page.locator("[data-status='running']")).wait_for(timeout=120_000)
        [job_id] = slurm.jobs()
        shown = card.locator(".labkit-job-list").inner_text()  # the walltime is 30 min
        assert re.fullmatch(rf"{job_id} RUNNING (30:00|29:[0-5]\d) left", shown), shown
        assert card.locator(".labkit-scale label").inner_text() == "Jobs"
        panel.screenshot(path=str(tmp_path / "slurm-card.png"))

        card.get_by_role("button", name="Stop").click()
        wait_for(lambda: not slurm.jobs(), 60, "the cluster's job cancelled")
        card.wait_for(state="detached", timeout=30_000)
