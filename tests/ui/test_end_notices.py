"""Told when it ends, in real JupyterLab: a batch that finishes, a Dask-on-SLURM job near its
walltime and then cancelled outside labkit are JupyterLab notifications, once each, and the
card says why the cluster stopped (a real slurmctld and slurmd, ``tests/slurmbed.py``)."""

from __future__ import annotations

import json

import pytest

from labkit.runs.batch import save_results
from labkit.runs.results import BatchEntry
from tests.conftest import wait_for
from tests.ui.sidebar import clusters_stopped_after, open_panel, polls, wait_for_polls

TOAST = ".jp-Notification-Toast-{}"


def _write_batch(folder, status: str, outcomes: list[str]) -> None:
    """A batch's results.json as labkit's batch runner writes it."""
    entries = [BatchEntry({"x": i}, outcome, index=i) for i, outcome in enumerate(outcomes)]
    header = {"bundle": "bundles/demo", "name": "demo", "created": "2026-01-01T00:00:00"}
    save_results(folder, header | {"cluster": {"backend": "dask"}}, entries, status, 1.0)


@pytest.fixture
def minute_profile(tmp_path, monkeypatch):
    """A SLURM profile with a 1-minute walltime, as the server reads it (before it starts)."""
    minute = {"cores": 1, "memory": "1GiB", "interface": "lo", "log_directory": str(tmp_path)}
    profiles = tmp_path / "slurm-profiles.json"
    profiles.write_text(json.dumps({"minute": minute | {"walltime": "00:01:00"}}))
    monkeypatch.setenv("LABKIT_SLURM_PROFILES", str(profiles))


def _once(page, toast) -> None:
    """The toast is there once, and stays alone over more polls of clusters and runs."""
    wait_for_polls(page, polls(page), count=6)
    assert toast.count() == 1


def test_a_finished_batch_and_an_ending_slurm_cluster_are_notifications(
    slurm, minute_profile, lab, browser_page, tmp_path
):
    # polls every 0.5 s (runs every 2.5 s); "near" its walltime: 90% of it left (54 s)
    lab.write_settings("labkit:plugin", {"pollInterval": 0.5, "walltimeWarningFraction": 0.9})
    batch = lab.root / "batches" / "demo-1"
    batch.mkdir(parents=True)
    _write_batch(batch, "running", ["ok", "pending", "pending"])
    page = browser_page

    with clusters_stopped_after(lab, page, tmp_path):
        panel = open_panel(lab, page)
        panel.locator(".labkit-run[data-kind='batch'][data-status='running']").wait_for()
        _write_batch(batch, "done", ["ok", "ok", "failed"])
        done = page.locator(TOAST.format("warning"), has_text="Batch demo/demo-1 finished")
        done.wait_for(timeout=30_000)
        assert "2 ok, 1 failed" in done.inner_text()
        _once(page, done)

        profile = panel.get_by_role("combobox", name="SLURM profile for Dask on SLURM")
        profile.select_option("minute")
        page.get_by_role("spinbutton", name="workers for a new local cluster").fill("1")
        panel.get_by_role("button", name="Start Dask on SLURM").click()
        [started] = wait_for(lambda: lab.api("/labkit/api/clusters"), 30, "a SLURM cluster")
        card = panel.locator(f".labkit-card[data-cluster-id='{started['id']}']")
        near = page.locator(TOAST.format("warning"), has_text="reaches its walltime in")
        near.wait_for(timeout=120_000)
        [job_id] = slurm.jobs()
        assert f"{started['name']}: SLURM job {job_id} reaches its walltime in 0:" in (
            near.inner_text()
        )
        assert " left" in card.locator(".labkit-job-list").inner_text()
        _once(page, near)
        page.screenshot(path=str(tmp_path / "near-walltime.png"))

        assert slurm.run("scancel", job_id).returncode == 0
        stopped = page.locator(TOAST.format("error"), has_text=f"{started['name']} stopped")
        stopped.wait_for(timeout=60_000)
        why = f"SLURM job {job_id} was cancelled (CANCELLED)"
        assert stopped.inner_text().splitlines()[0] == f"{started['name']} stopped: {why}"
        assert card.locator(".labkit-card-error").inner_text().startswith(why)
        assert card.locator(".labkit-job-list").inner_text() == f"{job_id} ENDED (CANCELLED)"
        _once(page, stopped)
        page.screenshot(path=str(tmp_path / "cluster-stopped.png"))
