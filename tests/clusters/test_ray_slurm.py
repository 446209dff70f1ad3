"""Ray on SLURM against a real slurmctld and slurmd (``tests/slurmbed.py``).

One job of two 1-CPU tasks fills the 2-CPU node: task 0 is the Ray head, task 1 joins it.
Ray joins nodes only on a routable address, so the nodes use a test-bed address of this host
(``tests.netbed.routable_address``, in 198.18.0.0/15) rather than loopback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import labkit
from labkit.errors import SlurmError, UnsupportedOperationError
from tests.conftest import ray_on_slurm_tests, wait_for
from tests.slurmbed import kill_all, ray_node_dirs, ray_node_processes


def _options(folder: Path, interface: str, **more) -> dict:
    return {
        "cores": 1,
        "memory": "1GiB",
        "interface": interface,
        "log_directory": str(folder),
    } | more


@ray_on_slurm_tests
def test_a_notebook_attaches_to_ray_nodes_running_as_one_slurm_job(
    slurm, routable_interface, tmp_path
):
    cluster = labkit.connect(
        backend="ray", on="slurm", jobs=2, **_options(tmp_path, routable_interface)
    )
    job_id, token = cluster.job_id, cluster.folder / "auth_token"
    try:
        assert labkit.current() is cluster and cluster.address.startswith("ray://")
        assert [(job.job_id, job.state) for job in cluster.jobs()] == [(job_id, "RUNNING")]
        assert slurm.jobs() == [job_id]
        nodes = cluster.workers()
        assert len(nodes) == 2 and [n["cpus"] for n in nodes] == [1, 1]
        assert cluster.map(abs, range(-20, 0), progress=False) == list(range(20, 0, -1))
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        [shown] = cluster.summary()["jobs"]
        assert (shown["job_id"], shown["state"], shown["reason"]) == (job_id, "RUNNING", None)
        assert 0 < shown["time_left_s"] <= shown["time_limit_s"]  # what the card shows

        cluster.scale(3)  # a join job does not fit on the full node: pending, and says why
        pending = wait_for(
            lambda: [j for j in cluster.jobs() if j.state == "PENDING" and j.reason],
            30,
            "a join job, pending with a reason",
        )
        assert pending[0].reason == "Resources"
        cluster.scale(2)  # cancels it
        wait_for(lambda: slurm.jobs() == [job_id], 30, "the join job cancelled")
        with pytest.raises(UnsupportedOperationError, match=f"SLURM job {job_id}.*cannot shrink"):
            cluster.scale(1)
    finally:
        dirs = ray_node_dirs(tmp_path, job_id)
        try:
            cluster.close()
            wait_for(lambda: not slurm.jobs(), 60, "every job cancelled")
            assert len(dirs) == 2
            wait_for(lambda: not ray_node_processes(dirs), 30, "the Ray nodes stopped")
            assert not [d for d in dirs if os.path.exists(d)]  # each node removed its temp dir
            assert not token.exists()
        finally:
            kill_all(ray_node_processes(dirs))


@ray_on_slurm_tests
def test_a_job_whose_head_never_starts_fails_naming_it_and_its_output(
    slurm, routable_interface, tmp_path
):
    options = _options(
        tmp_path, routable_interface, prologue=["echo preparing the node", "sleep 300"]
    )
    with pytest.raises(SlurmError, match=r"SLURM job \d+ has run 3 s") as err:
        labkit.connect(backend="ray", on="slurm", jobs=1, startup_timeout=3, **options)
    assert "its Ray head never answered" in str(err.value)
    assert "preparing the node" in str(err.value)  # the end of the job's output file
    wait_for(lambda: not slurm.jobs(), 60, "the job cancelled")


def test_the_magic_asks_slurm_for_one_job_of_a_task_per_ray_node(slurm, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "labkit")
    line = (
        "%labkit connect --backend ray --on slurm --jobs 2 --cores 1 --memory 1GiB "
        f"--partition nope --log-directory {tmp_path}"
    )
    result = shell.run_cell(line)  # refused by SLURM before anything is submitted
    message = str(result.error_in_exec)
    assert "--ntasks=2 --cpus-per-task=1 --mem-per-cpu=1024M" in message
    assert "invalid partition specified: nope" in message
    assert slurm.jobs() == []


def test_a_client_server_log_shows_a_crash_from_where_faulthandler_names_it(tmp_path, capsys):
    from labkit.clusters.ray_slurm_node import print_client_server_errors

    logs = tmp_path / "session_latest" / "logs"
    logs.mkdir(parents=True)
    stacks = [f'  File "threading.py", line {n} in wait' for n in range(30)]
    crash = ["Fatal Python error: Segmentation fault", "", "Thread 0x7f (most recent call first):"]
    (logs / "ray_client_server_23001.err").write_text("\n".join(["starting", *crash, *stacks]))
    (logs / "ray_client_server_23002.err").write_text("starting\nserving on 23002\n")
    print_client_server_errors(str(tmp_path), lines=5)
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].endswith("ray_client_server_23001.err:")
    assert shown[1:] == [*crash, stacks[0], stacks[1]]  # the signal first; the healthy log not
