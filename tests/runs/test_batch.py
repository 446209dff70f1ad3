"""labkit batch: a parameter grid on Ray and Dask gives what sequential runs give; a failed
run is recorded and the rest go on; a run lost with a killed worker is run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import labkit
from labkit.runs import batch, expand_grid, read_records, run
from labkit.runs.parameters import check_grid
from labkit.runs.ship import data_key, shipped_folder

from ..conftest import free_ports, start_process, stop_process, wait_for
from .conftest import expected_total

BIN = Path(sys.executable).parent
GRID = {"scale": [1, 2, 3], "label": ["a", "b"]}
COMPARED = ("total", "label", "series", "cwd")


@pytest.fixture(scope="module")
def sequential(shared_bundle, tmp_path_factory) -> list[dict]:
    """Records of the six grid points run one after another in this process."""
    out = tmp_path_factory.mktemp("sequential")
    results = [
        run(shared_bundle, params, out=out / str(i), progress=False)
        for i, params in enumerate(expand_grid(GRID))
    ]
    assert all(result.ok for result in results)
    return [result.records for result in results]


def _compared(records: dict) -> dict:
    return {name: records[name] for name in COMPARED}


def _check_batch(result, sequential: list[dict], backend: str) -> None:
    results = json.loads((result.path / "results.json").read_text())
    assert results["kind"] == "batch" and results["status"] == "done"
    assert results["cluster"]["backend"] == backend
    assert results["summary"]["total"] == 6 and results["summary"]["ok"] == 6
    assert [entry["parameters"] for entry in results["runs"]] == expand_grid(GRID)
    for entry, expected in zip(results["runs"], sequential, strict=True):
        assert entry["status"] == "ok" and entry["error"] is None
        assert entry["worker_host"] and entry["duration_s"] > 0
        assert _compared(entry["records"]) == _compared(expected)
        assert read_records(result.path / entry["notebook"]) == entry["records"]


def test_grid_on_dask_matches_sequential_runs(shared_bundle, sequential, dask_scheduler, tmp_path):
    labkit.connect(dask_scheduler.address)
    result = batch(shared_bundle, GRID, out=tmp_path / "dask", progress=False)
    assert result.ok
    _check_batch(result, sequential, "dask")
    assert labkit.current().address == dask_scheduler.address, "an attached cluster stays"


def test_grid_on_ray_matches_sequential_runs(shared_bundle, sequential, ray_head, tmp_path):
    labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    result = batch(shared_bundle, GRID, out=tmp_path / "ray", progress=False)
    assert result.ok
    _check_batch(result, sequential, "ray")


def test_failed_run_is_recorded_and_the_rest_go_on(shared_bundle, dask_scheduler, tmp_path):
    out = tmp_path / "batch"
    done = subprocess.run(
        [str(BIN / "labkit"), "batch", str(shared_bundle), "--grid", "label=boom,a"]
        + ["--grid", "scale=2", "--on", dask_scheduler.address, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("labkit: 1 of 2 runs did not succeed")
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["failed", "ok"]
    assert "ValueError: boom" in runs[0]["error"] and runs[0]["records"] == {}
    assert (out / runs[0]["notebook"]).is_file()
    assert runs[1]["records"]["total"] == expected_total(2)


def test_a_worker_that_cannot_see_the_source_folder_runs_in_data_shipped_to_it(
    bundle, dask_scheduler, tmp_path
):
    """The manifest's folder exists nowhere (as on hosts without the notebook's filesystem):
    the data files are shipped, checked, and the runs use them (the multi-host test does
    this with a host that truly sees an empty folder)."""
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["working_dir"] = str(tmp_path / "only-on-my-laptop")
    manifest_path.write_text(json.dumps(manifest))
    labkit.connect(dask_scheduler.address)
    shipped = shipped_folder(data_key(manifest["data_files"]))
    try:
        result = batch(bundle, {"scale": [1, 2]}, out=tmp_path / "b", progress=False)
        assert [entry["status"] for entry in result.runs] == ["ok", "ok"], result.runs
        for entry in result.runs:
            assert entry["records"]["cwd"] == str(shipped)
            assert entry["records"]["total"] == expected_total(entry["parameters"]["scale"])
    finally:
        shutil.rmtree(shipped, ignore_errors=True)


def test_grid_values_are_checked_before_anything_runs(shared_bundle, tmp_path):
    with pytest.raises(labkit.LabkitError, match="parameter 'scale' expects int, got 'x'"):
        batch(shared_bundle, {"scale": [1, "x"]}, on="dask", out=tmp_path / "b")
    with pytest.raises(labkit.LabkitError, match="unknown parameter 'nope'"):
        check_grid(labkit.runs.load_bundle(shared_bundle).parameters, {"nope": [1]})
    with pytest.raises(labkit.LabkitError, match="retries must be a whole number"):
        batch(shared_bundle, {"scale": [1]}, retries=-1)


def _batch_in_background(bundle, grid, out) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["result"] = batch(bundle, grid, out=out, retries=2, progress=False)
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _kill_the_held_run_and_finish(bundle, tmp_path, worker_pids: set[int] | None) -> list[dict]:
    """Run a 6-point grid, SIGKILL the worker running scale=3 mid-run, check no run is lost."""
    hold = tmp_path / "hold"
    grid = {"scale": [1, 2, 3, 4, 5, 6], "hold_scale": [3], "hold_file": [str(hold)]}
    thread, box = _batch_in_background(bundle, grid, tmp_path / "batch")
    kernel_pid = None
    try:
        worker_pid, kernel_pid = map(int, wait_for(hold.read_text, 90, "the held run").split())
        if worker_pids is not None:
            assert worker_pid in worker_pids
        os.kill(worker_pid, signal.SIGKILL)
        thread.join(180)
        assert not thread.is_alive(), "the batch did not finish"
        assert "error" not in box, box.get("error")
        result = box["result"]
        assert [entry["status"] for entry in result.runs] == ["ok"] * 6
        totals = [entry["records"]["total"] for entry in result.runs]
        assert totals == [expected_total(scale) for scale in grid["scale"]]
        retried = result.runs[2]["records"]["worker_pid"]
        assert retried != worker_pid, "scale=3 finished on a live worker"
        wait_for(lambda: not _alive(kernel_pid), 30, "the orphaned kernel to exit")
        return result.runs
    finally:
        if kernel_pid is not None and _alive(kernel_pid):
            os.kill(kernel_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of our own is gone for every purpose here
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_killing_a_dask_worker_mid_batch_loses_no_run(bundle, tmp_path):
    """The scheduler here gives up on a task at its first lost worker (allowed-failures 0),
    so the run comes back lost and labkit's own resubmission (--retries) runs it again."""
    port, dashboard = free_ports(2)
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        start_process(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--dashboard-address", f"127.0.0.1:{dashboard}"],
            tmp_path / "scheduler.log",
            env,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                start_process(
                    [str(BIN / "dask"), "worker", address, "--no-nanny", "--nthreads", "1"]
                    + ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
                    tmp_path / f"worker{i}.log",
                )
            )
        cluster = wait_for(lambda: labkit.connect(address, timeout=5), 60, "dask scheduler")
        wait_for(lambda: len(cluster.workers()) == 2, 60, "two dask workers")
        runs = _kill_the_held_run_and_finish(bundle, tmp_path, {p.pid for p in procs[1:]})
        assert runs[2]["attempts"] == 2, "resubmitted by labkit after the scheduler gave up"
        # Dask may have queued another run on the same worker; it comes back the same way.
        assert all(entry["attempts"] in (1, 2) for entry in runs)
    finally:
        labkit.disconnect()
        for proc in reversed(procs):
            stop_process(proc)


def test_killing_a_ray_worker_mid_batch_loses_no_run(bundle, ray_head, tmp_path):
    """Ray retries a task whose worker died by itself (max_retries): one labkit attempt."""
    labkit.connect(ray_head.gcs_address, backend="ray", token_file=ray_head.token_file)
    runs = _kill_the_held_run_and_finish(bundle, tmp_path, None)
    assert [entry["attempts"] for entry in runs] == [1] * 6
