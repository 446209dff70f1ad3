"""``labkit batch --on slurm``: a grid as one job array on a real slurmctld and slurmd.

The node (``tests/slurmbed.py``) has 2 CPUs: two 1-core tasks run at once, and an array is
2 tasks wide by default (each taking the grid's runs in turn). The notebook can
hold one run (``x == hold``): its first attempt writes ``GATE.started`` ("TASK_PID
KERNEL_PID") and waits until the test creates ``GATE``; an attempt that finds ``GATE``
already there goes straight on. ``x == fail`` raises in the notebook.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from labkit.clusters.slurm import array_flag
from labkit.errors import ParameterError, SlurmError
from labkit.runs import batch, freeze
from labkit.runs.slurm_array import claim_path
from tests.conftest import stop_process, wait_for

from .conftest import write_notebook

CELLS = [
    "import os\nimport time\n\nimport labkit",
    'x = 1\nhold = -1\nfail = -1\ngate = ""',
    "if x == hold and not os.path.exists(gate):\n"
    '    with open(gate + ".tmp", "w") as handle:\n'
    '        handle.write(f"{os.getppid()} {os.getpid()}")\n'
    '    os.replace(gate + ".tmp", gate + ".started")\n'
    "    deadline = time.monotonic() + 60  # until the test opens the gate\n"
    "    while not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "        time.sleep(0.05)",
    'if x == fail:\n    raise ValueError(f"x={x} fails on purpose")\n'
    'labkit.record("square", x * x)\n'
    'labkit.record("cwd", os.getcwd())',
]
CLI = [sys.executable, "-m", "labkit.cli"]


def _bundle(tmp_path_factory, name: str, cells: list[str]) -> Path:
    """A frozen bundle of one notebook ``name`` whose second cell holds the parameters."""
    folder = tmp_path_factory.mktemp(f"slurm-{name}") / "project"
    folder.mkdir()
    write_notebook(folder / f"{name}.ipynb", cells, tags={1: ["parameters"]})
    return freeze(folder / f"{name}.ipynb", name=name, out=folder.parent / "bundles")


@pytest.fixture(scope="module")
def gated_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "gated", CELLS)


def _held(gate: Path) -> tuple[int, int]:
    """Wait for the held run's first attempt; its task's and its kernel's PIDs."""
    started = gate.with_name(gate.name + ".started")
    wait_for(started.exists, 90, "the held run's kernel")
    task_pid, kernel_pid = map(int, started.read_text().split())
    return task_pid, kernel_pid


def _cancel(slurm, task_id: str, task_pid: int, kernel_pid: int) -> None:
    """scancel one array task; wait until its process and its kernel have gone."""
    assert slurm.run("scancel", task_id).returncode == 0
    wait_for(lambda: not psutil.pid_exists(task_pid), 30, f"task {task_id} ended by scancel")
    try:  # the kernel notices its parent has gone (ipykernel's parent poller)
        wait_for(lambda: not psutil.pid_exists(kernel_pid), 30, "the cancelled run's kernel ended")
    finally:
        if psutil.pid_exists(kernel_pid):
            os.kill(kernel_pid, signal.SIGKILL)


def _taker(batch_dir: Path, job: str, index: int) -> str:
    """The array task (``JOB_TASK``) that took run ``index`` of job ``job``."""
    claim = claim_path(batch_dir, job, index)
    wait_for(claim.is_file, 30, f"run {index} taken by a task of job {job}")
    return f"{job}_{claim.read_text()}"


def _first_job(batch_dir: Path) -> str:
    rounds = wait_for(lambda: json.loads((batch_dir / "slurm.json").read_text())["rounds"], 30,
                      "the array submitted")  # fmt: skip
    return rounds[0]["job_id"]


def test_a_grid_runs_as_one_array_and_a_cancelled_task_runs_again(slurm, gated_bundle, tmp_path):
    gate, out = tmp_path / "gate", tmp_path / "batch"
    grid = {"x": [1, 2, 3, 4], "hold": [1], "gate": [str(gate)]}  # the first task held
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(batch, gated_bundle, grid, on="slurm", memory="1GiB", out=out,
                              progress=False)  # fmt: skip
        task_pid, kernel_pid = _held(gate)
        job = _first_job(out)
        held_by = _taker(out, job, 0)
        _cancel(slurm, held_by, task_pid, kernel_pid)
        gate.touch()  # the second attempt goes straight through
        result = running.result(timeout=120)

    assert result.ok, result.failed
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert runs == result.runs
    assert [run["records"]["square"] for run in runs] == [1, 4, 9, 16]
    assert {run["records"]["cwd"] for run in runs} == {str(gated_bundle.parent.parent / "project")}
    assert [run["attempts"] for run in runs] == [2, 1, 1, 1]
    other = ({f"{job}_0", f"{job}_1"} - {held_by}).pop()  # the array's other task ran the rest
    assert [run["slurm_job_id"] for run in runs[1:]] == [other] * 3
    again, task = runs[0]["slurm_job_id"].split("_")
    assert task == "0" and int(again) > int(job)  # a new, one-task array
    assert all((out / run["notebook"]).is_file() for run in runs)
    rounds = json.loads((out / "slurm.json").read_text())["rounds"]
    assert [(r["indices"], r["width"]) for r in rounds] == [([0, 1, 2, 3], 2), ([0], 1)]
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


def _ctrl_c_interrupts() -> None:
    """A suite started as a background job (`make test &`) runs with SIGINT ignored, and a
    Python started so keeps ignoring it; the submitter must hear Ctrl-C as a terminal's does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_status_and_resume_work_from_the_batch_folder_after_the_submitter_is_gone(
    slurm, gated_bundle, tmp_path, monkeypatch
):
    profiles = tmp_path / "profiles.json"  # 2 cores a run: the node runs one at a time
    profiles.write_text(json.dumps({"wide": {"cores": 2, "memory": "1GiB"}}))
    monkeypatch.setenv("LABKIT_SLURM_PROFILES", str(profiles))
    gate, out = tmp_path / "gate", tmp_path / "batch"
    grid = ["--grid", "x=1,2", "--grid", "hold=1", "--grid", f"gate={gate}"]
    log = tmp_path / "submitter.log"
    submitter = subprocess.Popen(
        [
            *CLI,
            "batch",
            str(gated_bundle),
            *grid,
            "--on",
            "slurm:wide",
            "--out",
            str(out),
            "--tasks",
            "2",
        ],  # fmt: skip
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_ctrl_c_interrupts,
    )
    try:
        task_pid, kernel_pid = _held(gate)
        submitter.send_signal(signal.SIGINT)  # Ctrl-C: the array stays; the submitter goes
        assert submitter.wait(30) == 1
    finally:
        stop_process(submitter)
    said = log.read_text()
    assert "the SLURM array keeps running" in said and f"labkit batch --status {out}" in said
    # from here on, only the folder knows the batch
    job = _first_job(out)
    held_by = _taker(out, job, 0)
    waiting = ({f"{job}_0", f"{job}_1"} - {held_by}).pop()

    def status() -> str:
        done = subprocess.run([*CLI, "batch", "--status", str(out)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = status()
    assert f"run 0 {{'x': 1, 'hold': 1, 'gate': '{gate}'}}: RUNNING as {held_by}" in shown
    assert f"WAITING (for a task of its array: 1 running, 1 pending (Resources)) as {job}" in shown

    _cancel(slurm, held_by, task_pid, kernel_pid)

    def lost() -> str | None:
        text = status()
        return text if "lost" in text else None

    shown = wait_for(lost, 30, "the cancelled run shown as lost")
    assert f"SLURM task {held_by} ended without a result" in shown
    assert f"`labkit batch --resume {out}` submits those again" in shown
    assert json.loads((out / "results.json").read_text())["runs"][0]["status"] == "lost"

    gate.touch()
    resumed = subprocess.run([*CLI, "batch", "--resume", str(out)], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "2 ok" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "done" and results["slurm"]["profile"] == "wide"
    runs = results["runs"]
    assert [(run["status"], run["attempts"]) for run in runs] == [("ok", 2), ("ok", 1)]
    assert runs[1]["slurm_job_id"] == waiting and runs[0]["slurm_job_id"] != held_by

    from mlflow.tracking import MlflowClient  # each run logged once, by whoever saw it end

    client = MlflowClient(os.environ["LABKIT_TRACKING_URI"])
    children = [client.get_run(run["mlflow_run_id"]) for run in runs]
    assert [run.info.status for run in children] == ["FINISHED", "FINISHED"]
    assert [run.data.metrics["square"] for run in children] == [1, 4]
    parent = children[0].data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).info.status == "FINISHED"
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


def test_a_failing_notebook_is_recorded_failed_and_not_retried(slurm, gated_bundle, tmp_path):
    out = tmp_path / "batch"
    result = batch(gated_bundle, {"x": [1, 2], "fail": [2]}, on="slurm", memory="1GiB",
                   out=out, progress=False)  # fmt: skip
    ok, failed = result.runs
    assert (ok["status"], ok["records"]["square"]) == ("ok", 1)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"].endswith(": ValueError: x=2 fails on purpose")
    assert (out / failed["notebook"]).is_file()  # the executed notebook, with its traceback
    assert len(json.loads((out / "slurm.json").read_text())["rounds"]) == 1
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


def test_slurm_refuses_before_anything_is_submitted(slurm, gated_bundle, tmp_path, monkeypatch):
    grid = {"x": [1, 2]}
    with pytest.raises(SlurmError, match="invalid partition specified: nope"):
        batch(gated_bundle, grid, on="slurm", partition="nope", out=tmp_path / "a")
    with pytest.raises(SlurmError, match="Requested node configuration is not available"):
        batch(gated_bundle, grid, on="slurm", cores=64, out=tmp_path / "b")
    with pytest.raises(SlurmError, match="--array=0-1001: .*Invalid job array specification"):
        batch(  # > MaxArraySize
            gated_bundle, {"x": list(range(1002))}, on="slurm", tasks=1002, out=tmp_path / "b"
        )
    with pytest.raises(ParameterError, match="tasks"):
        batch(gated_bundle, grid, on="slurm", tasks=0, out=tmp_path / "b")
    with pytest.raises(ParameterError, match="partition: options of a SLURM batch"):
        batch(gated_bundle, grid, on="local", partition="debug", out=tmp_path / "c")
    assert not any(tmp_path.iterdir()) and slurm.jobs() == []

    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps({"nowhere": {"partition": "nope"}}))
    env = {**os.environ, "LABKIT_SLURM_PROFILES": str(profiles)}
    for on, said in [
        ("slurm:nowhere", "SLURM refused the request .*invalid partition specified: nope"),
        ("slurm:gpu", "no SLURM profile 'gpu': known profiles are nowhere"),
    ]:
        done = subprocess.run([*CLI, "batch", str(gated_bundle), "--grid", "x=1", "--on", on],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("labkit: ")
        assert re.search(said, done.stderr), done.stderr
    assert slurm.jobs() == []
    done = subprocess.run([*CLI, "batch", "--status", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "is not a SLURM batch folder" in done.stderr

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="SLURM is not available on this machine: sbatch"):
        batch(gated_bundle, grid, on="slurm")


def test_array_indices_are_written_as_ranges():
    assert array_flag([0, 1, 2, 3]) == "--array=0-3"
    assert array_flag([7, 2, 3, 5, 9, 8]) == "--array=2-3,5,7-9"


def test_a_task_killed_at_its_walltime_is_marked_timeout_and_resumed(slurm, gated_bundle, tmp_path):
    """SLURM's shortest walltime is a minute; this test leaves what such a task leaves
    behind (its output's last line, no outcome) in place of a finished one's."""
    from labkit.runs.slurm_array import batch_status, outcome_path, resume_batch

    out = tmp_path / "batch"
    first = batch(gated_bundle, {"x": [3]}, on="slurm", memory="1GiB", out=out, progress=False)
    job = first.runs[0]["slurm_job_id"]
    wait_for(lambda: not slurm.jobs(), 60, "the task gone from the queue")
    outcome_path(out, 0).unlink()
    (out / "slurm" / "logs" / f"task-{job}.out").write_text(
        "slurmstepd-node: error: *** JOB 99 ON node CANCELLED AT 2026-12-06T19:52:29 "
        "DUE TO TIME LIMIT ***\n"
    )
    status = batch_status(out)
    (run,) = status.result.runs
    assert run["status"] == "timeout" and run["slurm_job_id"] == job
    assert run["error"].startswith(f"SLURM task {job} ended without a result: slurmstepd")
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"

    resumed = resume_batch(out, progress=False)
    assert resumed.ok and resumed.runs[0]["attempts"] == 2
    assert resumed.runs[0]["slurm_job_id"] != job
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


def test_a_batch_outlives_a_restart_of_slurmctld(slurm, gated_bundle, tmp_path, caplog):
    gate, out = tmp_path / "gate", tmp_path / "batch"
    grid = {"x": [1], "hold": [1], "gate": [str(gate)]}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(batch, gated_bundle, grid, on="slurm", memory="1GiB", out=out,
                              progress=False)  # fmt: skip
        _held(gate)
        slurm.stop_controller()
        try:  # squeue gives up after ~9 s: the run is not taken for lost meanwhile
            wait_for(lambda: "squeue failed" in caplog.text, 30, "the watcher's squeue failing")
        finally:
            slurm.start_controller()
        gate.touch()
        result = running.result(timeout=120)
    assert result.ok, result.failed
    assert [run["attempts"] for run in result.runs] == [1]
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


TRAINING = [
    "import os\nimport time\n\nimport labkit\n"
    "from labkit.spectra import mock_survey, preprocess, rest_grid\n"
    "from labkit.vae import TrainConfig, train\n"
    "from labkit.vae.checkpoints import CheckpointStore",
    'checkpoints = ""\ngate = ""',
    "first = not os.path.exists(checkpoints)\n"
    "grid = rest_grid(900.0, 9800.0, 2e-3)\n"
    "spectra = preprocess(mock_survey(120, seed=5), grid=grid, cluster=False, progress=False)\n"
    "if not first:\n"
    "    state = CheckpointStore(checkpoints).latest_state()\n"
    '    labkit.record("resumed_from", [state["epoch"], state.get("step")])',
    "def hold(what):  # the first attempt waits at WHAT until the test says go (or cancels it)\n"
    "    if first:\n"
    '        with open(f"{gate}.{what}.tmp", "w") as handle:\n'
    '            handle.write(f"{os.getppid()} {os.getpid()}")\n'
    '        os.replace(f"{gate}.{what}.tmp", f"{gate}.{what}")\n'
    "        deadline = time.monotonic() + 60\n"
    '        while not os.path.exists(f"{gate}.{what}.go") and time.monotonic() < deadline:\n'
    "            time.sleep(0.05)\n"
    "\n"
    "written = CheckpointStore.write_partial\n"
    "\n"
    "def write_then_hold(self, state):  # the walltime comes just after the checkpoint\n"
    "    path = written(self, state)\n"
    '    hold("checkpointed")\n'
    "    return path\n"
    "\n"
    "CheckpointStore.write_partial = write_then_hold\n"
    "config = TrainConfig(latent_dim=4, hidden=(32, 16), batch_size=16, epochs=3, kl_warmup=1)\n"
    'result = train(spectra, config, "in-process", checkpoint_dir=checkpoints,\n'
    "               resume=not first, progress=False,\n"
    '               callback=lambda record: record["epoch"] == 1 and hold("epoch1"))\n'
    'labkit.record("epochs", [record["epoch"] for record in result.history])',
]


@pytest.fixture(scope="module")
def training_bundle(tmp_path_factory) -> Path:
    return _bundle(tmp_path_factory, "training", TRAINING)


def test_a_task_warned_of_its_walltime_has_its_training_checkpoint_and_resume(
    slurm, training_bundle, tmp_path
):
    """``--signal``: SIGUSR1 to the task (as SLURM sends it before walltime) reaches the
    training kernel, which checkpoints after its current batch; the task is then cut off
    (as the walltime would) and the run, submitted again, continues from that checkpoint."""
    gate, checkpoints, out = tmp_path / "gate", tmp_path / "checkpoints", tmp_path / "batch"
    grid = {"checkpoints": [str(checkpoints)], "gate": [str(gate)]}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(batch, training_bundle, grid, on="slurm", out=out, progress=False)
        wait_for(lambda: Path(f"{gate}.epoch1").exists(), 120, "the first epoch trained")
        task = _taker(out, _first_job(out), 0)
        warned = slurm.run("scancel", "--signal=USR1", "--batch", task)
        assert warned.returncode == 0, warned.stderr
        log = out / "slurm" / "logs" / f"task-{task}.out"

        def said(text: str) -> bool:
            return log.is_file() and text in log.read_text()

        wait_for(lambda: said("SIGUSR1: passed on to the kernel"), 30, "the signal passed on")
        Path(f"{gate}.epoch1.go").touch()
        held = Path(f"{gate}.checkpointed")
        wait_for(held.exists, 60, "the checkpoint the signal asked for")
        assert (checkpoints / "partial.pt").is_file()
        task_pid, kernel_pid = map(int, held.read_text().split())
        _cancel(slurm, task, task_pid, kernel_pid)
        result = running.result(timeout=180)

    assert said("SIGUSR1: this task starts no new run")
    assert result.ok, result.failed
    (run,) = result.runs
    assert run["attempts"] == 2 and run["slurm_job_id"] != task
    assert run["records"]["resumed_from"] == [1, 1]  # one batch into epoch 2
    assert run["records"]["epochs"] == [1, 2, 3]
    assert not (checkpoints / "partial.pt").exists()
    wait_for(lambda: not slurm.jobs(), 60, "every task gone from the queue")


def test_an_idle_task_takes_only_runs_stuck_behind_another_task(tmp_path, monkeypatch):
    """Claims without SLURM: a task reserves the next free run while one runs; an idle task
    takes a reserved run only when its reserver has ended or has held it ``STUCK_S``."""
    from labkit.runs import slurm_task

    runs, job = [0, 1, 2], "7"
    assert [slurm_task.reserve(tmp_path, job, "0", runs, steal=True) for _ in runs] == runs
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=True) is None  # held, just now
    assert slurm_task.reserved_runs(tmp_path, job, runs)

    ended = subprocess.Popen(["true"])  # a process that has ended: its pid is free
    ended.wait()
    reserved = claim_path(tmp_path, job, 1).with_name("001.next")
    reserved.write_text(f"{slurm_task.socket.gethostname()} {ended.pid}")
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=False) is None  # busy: no taking
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=True) == 1  # its reserver ended
    assert claim_path(tmp_path, job, 1).read_text() == "1"

    monkeypatch.setattr(slurm_task, "STUCK_S", -1.0)  # every reservation held "long"
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=True) == 0
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=True) == 2
    assert slurm_task.reserve(tmp_path, job, "1", runs, steal=True) is None
    assert not slurm_task.reserved_runs(tmp_path, job, runs)


def test_a_run_that_hits_its_walltime_is_retried_once_and_a_lost_one_up_to_retries(tmp_path):
    """What a watcher resubmits, from the batch's own record of its rounds (no SLURM here)."""
    from labkit.runs.slurm_array import ArrayWatch

    tasks = [{"parameters": {"x": x}, "mlflow_run_id": None} for x in (1, 2)]
    first = {"job_id": "10", "indices": [0, 1], "width": 2, "timed_out": []}
    state = {"tasks": tasks, "retries": 3, "rounds": [first]}
    watch = ArrayWatch(tmp_path, state)
    watch.entries[0].status, watch.entries[1].status = "timeout", "lost"
    assert watch.retriable() == [0, 1]

    again = {"job_id": "11", "indices": [0, 1], "width": 2, "timed_out": [0]}
    state["rounds"].append(again)
    watch = ArrayWatch(tmp_path, state)  # as --status reads the folder afresh
    watch.entries[0].status, watch.entries[1].status = "timeout", "lost"
    assert watch.retriable() == [1]
    watch.rerun_after_timeout.clear()  # as --resume does: the user asks for it again
    assert watch.retriable(fresh=True) == [0, 1]
