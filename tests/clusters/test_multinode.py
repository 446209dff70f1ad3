"""Clusters across hosts, on the namespace test bed (``tests/multihost.py``).

The notebook side runs on the ``laptop`` host, strangers on ``outsider``; the clusters on
``head``, ``node1`` and ``node2``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.clusters.ray import new_ray_temp_dir
from tests.conftest import wait_for
from tests.multihost import (
    BIN,
    CLIENT,
    NODES,
    RAY_PORT,
    Bed,
    dask_cluster,
    last_json,
    namespace_bed,
    ray_cluster,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"
)


@pytest.fixture(scope="session")
def bed(tmp_path_factory) -> Iterator[Bed]:
    with namespace_bed(tmp_path_factory.mktemp("netbed")) as made:
        yield made


@pytest.fixture(scope="session")
def dask_tls(bed) -> Iterator[Bed]:
    with dask_cluster(bed, tls=True):
        yield bed


@pytest.fixture(scope="session")
def ray_session(bed) -> Iterator[Bed]:
    with ray_cluster(bed):
        yield bed


def _ray_up(bed: Bed) -> Bed:
    """The bed's Ray cluster, started afresh where a test lost its head."""
    if not bed.ray_head_running():
        bed.stop("ray")
        bed.start_ray_cluster()
    return bed


@pytest.fixture
def ray_multinode(ray_session) -> Bed:
    return _ray_up(ray_session)


# -- Dask over mutual TLS --------------------------------------------------------------------
def test_a_notebook_maps_over_a_tls_dask_cluster_on_other_hosts(dask_tls):
    figures = dask_tls.client("laptop", ["map", dask_tls.dask_address(), "400"], dask_tls.env())
    nodes = sorted(dask_tls.net[h].address for h in ("node1", "node2"))
    assert figures["hosts"] == nodes  # workers() names each host by its address
    assert figures["ordered"] and figures["n"] == 400
    assert figures["ran_on"] == nodes


@pytest.mark.parametrize(
    "case, tls, scheme, expected",
    [
        ("no certificate", None, "tls", "has no CA file or certificate"),
        ("another CA's certificate", "stranger", "tls", "did not sign"),
        ("plaintext", None, "tcp", "only speaks TLS"),
    ],
)
def test_strangers_are_refused_by_the_tls_scheduler_at_once(dask_tls, case, tls, scheme, expected):
    address = dask_tls.dask_address().replace("tls://", f"{scheme}://")
    outcome = dask_tls.client("outsider", ["refused", address], dask_tls.env(tls=tls))
    assert outcome["error"] == "AuthError", (case, outcome)
    assert expected in outcome["message"] and address in outcome["message"]
    assert outcome["seconds"] < 10  # at once, not after the 30 s connect timeout


def test_a_worker_host_lost_mid_map_loses_nothing(dask_tls):
    """node2's worker is killed (SIGKILL, its whole process group) while a map runs: Dask
    reruns its tasks on node1 and the result is complete and in order."""
    laptop, node2 = dask_tls.net["laptop"], dask_tls.net["node2"]
    args = [sys.executable, *CLIENT, "map", dask_tls.dask_address(), "60", "--slow", "0.1"]
    log = dask_tls.work / "fault-client.log"
    client = laptop.start(args, log, env=dask_tls.env())
    try:
        wait_for(lambda: "mapping" in log.read_text(), 120, "the map under way")
        [worker] = [p for p in node2.procs if p.args[4].endswith("/dask")]
        node2.kill(worker)
        client.wait(180)
        figures = last_json(log)
        assert figures["ordered"] and figures["n"] == 60
    finally:
        laptop.stop(client)
        dask_tls.start_dask_worker("node2")  # node2 comes back for the tests after this one
        dask_tls.wait_for_dask()


def _analysis_bundle(bed: Bed, name: str) -> Path:
    """``tests/runs``' analysis notebook and its data file, frozen under ``name``/bundles."""
    from labkit.runs import freeze
    from tests.runs.conftest import CELLS, write_notebook

    project = bed.work / name / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "values.txt").write_text("1 2 3.5\n")
    write_notebook(project / "analysis.ipynb", CELLS)
    return freeze(project / "analysis.ipynb", name="analysis", out=project.parent / "bundles")


def test_a_batch_runs_on_a_host_that_does_not_see_the_notebooks_folder(dask_tls):
    """node2's worker sees an empty folder where the notebook and its data live: the batch
    ships the data files there (checked on arrival) and every run succeeds, on both hosts."""
    from labkit.runs.bundle import load_bundle
    from labkit.runs.ship import data_key, shipped_folder
    from tests.runs.conftest import expected_total

    bed = dask_tls
    bundle = _analysis_bundle(bed, "blind")
    project = bundle.parents[1] / "project"
    node2 = bed.net["node2"]
    [worker] = [p for p in node2.procs if "worker" in p.args]
    node2.stop(worker)
    blind = bed.start_dask_worker("node2", hide=project.parent)
    try:
        bed.wait_for_dask()
        args = ["batch", bed.dask_address(), "6", "--bundle", str(bundle)]
        runs = bed.client("laptop", args, bed.env())["runs"]
        assert [run["status"] for run in runs] == ["ok"] * 6, runs
        assert sorted({run["worker_host"] for run in runs}) == sorted(
            bed.net[h].address for h in NODES
        )
        for run in runs:
            assert run["records"]["total"] == expected_total(run["parameters"]["scale"])
        cwd = {run["worker_host"]: run["records"]["cwd"] for run in runs}
        assert cwd[bed.net["node1"].address] == str(project)  # it sees the folder
        assert "labkit-bundles" in cwd[node2.address]  # it ran in the data shipped to it
    finally:
        node2.stop(blind)
        shutil.rmtree(shipped_folder(data_key(load_bundle(bundle).manifest["data_files"])), True)
        bed.start_dask_worker("node2")
        bed.wait_for_dask()


JUPYTER_PORT = 8888  # the laptop's own stack: no clash with anything on this machine


def _jupyter_on(bed: Bed, host: str, token: str) -> subprocess.Popen:
    """A real ``jupyter server`` with labkit's extension on ``host``, Jupyter's token auth on."""
    node = bed[host]
    root = bed.work / f"jupyter-{host}"
    (root / "runtime").mkdir(parents=True, exist_ok=True)
    env = bed.env(None) | {"JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    args = [sys.executable, "-m", "jupyter", "server", "--allow-root", "--no-browser"]
    args += [f"--ip={node.address}", f"--port={JUPYTER_PORT}", f"--ServerApp.root_dir={root}"]
    args += [f"--IdentityProvider.token={token}", "--ClusterManager.list_kernel_clusters=False"]
    return node.start(args, bed.work / f"jupyter-{host}.log", env)


def test_a_remote_dashboard_is_served_through_jupyter_and_only_with_its_token(dask_tls):
    """A Jupyter server on the laptop registers the TLS Dask cluster on ``head``: the card's
    dashboard link is a path on Jupyter, which serves the scheduler's page to a request with
    Jupyter's token and refuses one from ``outsider`` without it at once."""
    bed, token = dask_tls, secrets.token_hex(16)
    laptop = bed["laptop"]
    server = _jupyter_on(bed, "laptop", token)
    jupyter = f"http://{laptop.address}:{JUPYTER_PORT}"

    def fetch(host: str, path: str, with_token: bool = True, data: dict | None = None) -> dict:
        args = ["fetch", jupyter + path] + (["--jupyter-token", token] if with_token else [])
        args += ["--data", json.dumps(data)] if data is not None else []
        return bed.client(host, args, bed.env(None))

    try:
        wait_for(lambda: fetch("laptop", "/labkit/api/clusters")["status"] == 200, 120, "Jupyter")
        files = bed.certs["client"]
        tls = {"ca_file": str(files.ca_file), "cert": str(files.cert), "key": str(files.key)}
        body = {"address": bed.dask_address(), "name": "lab", "tls": tls}
        registered = fetch("laptop", "/labkit/api/clusters", data=body)
        assert registered["status"] == 201, registered
        card = json.loads(fetch("laptop", "/labkit/api/clusters/lab")["body"])
        assert card["status"] == "running", card
        link = card["dashboard_url"]
        assert link == "/labkit/dashboard/lab/status", card  # a path on Jupyter, not head:8787
        page = fetch("laptop", link)
        assert page["status"] == 200 and "Dask" in page["body"], page
        stranger = fetch("outsider", link, with_token=False)
        assert stranger["status"] in (302, 403), stranger
        if stranger["status"] == 302:
            assert "/login" in stranger["location"], stranger
        assert stranger["seconds"] <= 5, stranger
        assert "Dask" not in stranger["body"]
    finally:
        laptop.stop(server)


def test_a_worker_host_lost_mid_batch_loses_no_run(dask_tls):
    """The run of scale=3 holds its worker busy; that worker's host loses its processes
    (SIGKILL to the worker's process group): the run is retried on the other host, every
    run ends ok, and results.json, written by the batch, lists them all."""
    from tests.runs.conftest import expected_total

    bed = dask_tls
    bundle, hold = _analysis_bundle(bed, "held"), bed.work / "held" / "hold"
    args = [sys.executable, *CLIENT, "batch", bed.dask_address(), "6", "--bundle", str(bundle)]
    args += ["--hold-scale", "3", "--hold-file", str(hold)]
    log = bed.work / "batch-fault-client.log"
    client = bed["laptop"].start(args, log, env=bed.env())
    lost, kernel_pid = None, None
    try:
        worker_pid, kernel_pid = map(int, wait_for(hold.read_text, 180, "the held run").split())
        [lost] = [host for host in NODES if worker_pid in bed[host].pids()]
        [worker] = [p for p in bed[lost].procs if p.args[4].endswith("/dask")]
        bed[lost].kill(worker)
        client.wait(240)
        outcome = last_json(log)
        results = json.loads((Path(outcome["folder"]) / "results.json").read_text())
        assert results["status"] == "done"
        assert results["summary"]["total"] == results["summary"]["ok"] == 6, results["summary"]
        assert [run["status"] for run in results["runs"]] == ["ok"] * 6
        totals = [run["records"]["total"] for run in results["runs"]]
        assert totals == [expected_total(scale) for scale in range(1, 7)]
        [survivor] = [bed[host].address for host in NODES if host != lost]
        assert results["runs"][2]["worker_host"] == survivor  # retried elsewhere
    finally:
        bed["laptop"].stop(client)
        if kernel_pid is not None:  # the held run's kernel, orphaned on the lost host
            with contextlib.suppress(ProcessLookupError):
                os.kill(kernel_pid, signal.SIGKILL)
        if lost is not None:
            bed.start_dask_worker(lost)  # the host comes back for the tests after this one
            bed.wait_for_dask()


# -- Ray with token auth ---------------------------------------------------------------------
@pytest.mark.timeout(900)  # the first one waits for three Ray nodes to start on 2 cores
def test_a_notebook_maps_over_a_token_ray_cluster_on_other_hosts(ray_multinode):
    bed = ray_multinode
    # 50 ms an item: the head's one CPU cannot finish every chunk before the other nodes'
    # workers start (with no work an item, it once did, and every item ran on the head)
    args = ["map", bed.ray_address, "200", "--token-file", str(bed.token_file), "--slow", "0.05"]
    figures = bed.client("laptop", args, bed.env(tls=None))
    every_host = sorted(bed.net[h].address for h in ("head", "node1", "node2"))
    assert figures["hosts"] == every_host
    assert figures["ordered"] and figures["n"] == 200
    assert len(figures["ran_on"]) >= 2


TRAIN_SPECTRA, TRAIN_EPOCHS = 2048, 8


def _train_args(bed: Bed) -> list[str]:
    gcs = f"{bed['head'].address}:{RAY_PORT}"
    args = ["train", gcs, str(TRAIN_SPECTRA), "--token-file", str(bed.token_file)]
    return args + ["--epochs", str(TRAIN_EPOCHS)]


@pytest.fixture(scope="module")
def ray_train_run(ray_session) -> dict:
    """Two Ray Train workers of one CPU each on nodes of one CPU each: two hosts, so DDP's
    gloo must connect across them (the driver runs on the head, as Ray Train needs)."""
    bed = _ray_up(ray_session)
    return bed.client("head", _train_args(bed), bed.env(tls=None), timeout=500)


@pytest.mark.timeout(1200)  # with the Ray cluster's start on a busy machine
def test_ray_train_runs_data_parallel_across_two_hosts(ray_train_run):
    assert ray_train_run["epochs"] == TRAIN_EPOCHS
    assert math.isfinite(ray_train_run["val_loss"])


@pytest.mark.timeout(900)
def test_ray_train_goes_on_from_its_last_epoch_when_a_worker_host_is_lost(
    ray_train_run, ray_multinode
):
    """After the first epoch, every Ray process of a node that runs a Ray Train worker is
    killed (SIGKILL to its ``ray start`` process group): Ray Train restarts the worker group
    on the hosts left, it goes on from the last epoch rank 0 reported, and the final
    validation loss is within 2 % of the run without the fault."""
    bed = ray_multinode
    head = bed["head"]
    log = bed.work / "train-fault-client.log"
    args = [sys.executable, *CLIENT, *_train_args(bed), "--show-workers"]
    client = head.start(args, log, env=bed.env(tls=None))
    lost = None
    try:

        def workers() -> list[dict] | None:
            if client.poll() is not None:
                raise RuntimeError(f"the training ended early:\n{log.read_text()[-3000:]}")
            shown = [line for line in log.read_text().splitlines() if line.startswith("workers ")]
            return json.loads(shown[0].removeprefix("workers ")) if shown else None

        hosts = {worker["host"] for worker in wait_for(workers, 400, "the training's workers")}
        # the head holds the driver; a node running a worker is the host to lose
        lost = next(host for host in NODES if bed[host].address in hosts)
        [ray_node] = [p for p in bed[lost].procs if Path(p.args[4]).name == "ray"]
        bed[lost].kill(ray_node)
        client.wait(600)
        figures = last_json(log)
        assert figures["epochs"] == TRAIN_EPOCHS, figures
        baseline = ray_train_run["val_loss"]
        assert abs(figures["val_loss"] - baseline) <= 0.02 * abs(baseline), (figures, baseline)
    finally:
        head.stop(client)
        if lost is not None:  # the host comes back for the tests after this one
            bed.start_ray_node_until_joined(lost, 3)


def test_a_ray_client_without_the_token_is_refused_at_once(ray_multinode):
    outcome = ray_multinode.client(
        "outsider", ["refused", ray_multinode.ray_address], ray_multinode.env(tls=None)
    )
    assert outcome["error"] == "AuthError", outcome
    assert "token" in outcome["message"]
    assert outcome["seconds"] < 10  # not Ray's own 20-30 s of retries


@pytest.mark.timeout(900)  # the Ray cluster starts afresh after a test that lost its head
def test_a_lost_ray_head_is_an_error_naming_it_within_the_timeout(ray_multinode):
    """The head's processes are killed (SIGKILL, by PID) while the laptop maps over a Ray
    Client: the map fails with ConnectError naming the head within labkit.connect's timeout,
    where Ray's client alone retries for its own 30 s and then raises a bare ConnectionError."""
    bed = ray_multinode
    head, laptop, timeout = bed["head"], bed["laptop"], 20
    args = [sys.executable, *CLIENT, "map", bed.ray_address, "600", "--slow", "0.2"]
    args += ["--token-file", str(bed.token_file), "--timeout", str(timeout), "--report-error"]
    log = bed.work / "head-loss-client.log"
    client = laptop.start(args, log, env=bed.env(tls=None))
    try:
        wait_for(lambda: "mapping" in log.read_text(), 120, "the map under way")
        [ray_head] = [p for p in head.procs if Path(p.args[4]).name == "ray"]
        lost = time.time()
        head.kill(ray_head)
        client.wait(timeout * 3)  # a hang fails here
        outcome = last_json(log)
        assert outcome["error"] == "ConnectError", outcome
        assert f"Ray head at {bed.ray_address}" in outcome["message"]
        assert outcome["at"] - lost <= timeout, outcome
    finally:
        laptop.stop(client)
        bed.stop("ray")  # the nodes lost their head too; the next Ray test starts afresh


# -- a sidebar cluster that takes nodes from other hosts ------------------------------------
def _described(path: Path, workers: int, status: str = "running") -> dict | None:
    """The sidebar server's record of its cluster (``multinode_server`` writes it) once it
    shows ``status`` and ``workers``; None before."""
    found = json.loads(path.read_text()) if path.exists() else {}
    return found if found.get("status") == status and found.get("workers") == workers else None


def test_a_sidebar_dask_cluster_off_loopback_takes_nodes_only_over_mutual_tls(bed):
    """``ClusterManager.bind_host`` set to the head's address: the cluster starts with mutual
    TLS on its own certificates, its record shows the command a node runs to join, a node
    that runs it joins, the notebook attaches with the client files, a stranger cannot."""
    head, node1 = bed["head"], bed["node1"]
    described = bed.work / "described.json"
    server_args = [sys.executable, "-m", "tests.clusters.multinode_server", "dask"]
    server = head.start(
        [*server_args, head.address, "1", str(described)], bed.work / "server.log", bed.env(None)
    )
    joined = None
    try:
        cluster = wait_for(lambda: _described(described, 1), 120, "the sidebar's cluster")
        assert cluster["address"].startswith(f"tls://{head.address}:")
        [program, *rest] = shlex.split(cluster["join"])
        assert program == "dask" and rest[:2] == ["worker", cluster["address"]]
        assert "--tls-cert" in rest and "--tls-key" in rest
        joined = node1.start([str(BIN / program), *rest], bed.work / "joined-worker.log")
        wait_for(lambda: _described(described, 2), 120, "the node that ran the join command")

        files = cluster["tls"]
        env = bed.env(None)
        prefix = "DASK_DISTRIBUTED__COMM__TLS__"
        env |= {prefix + "CA_FILE": files["ca_file"], prefix + "CLIENT__CERT": files["cert"]}
        env[prefix + "CLIENT__KEY"] = files["key"]
        figures = bed.client("laptop", ["map", cluster["address"], "50"], env)
        assert figures["hosts"] == sorted([head.address, node1.address])
        assert figures["ordered"] and figures["n"] == 50
        outcome = bed.client("outsider", ["refused", cluster["address"]], bed.env(None))
        assert outcome["error"] == "AuthError", outcome
    finally:
        if joined is not None:
            node1.stop(joined)
        head.stop(server)


def test_a_sidebar_ray_cluster_off_loopback_takes_nodes_only_with_its_token(bed):
    """``ClusterManager.bind_host`` set to the head's address: the Ray head starts with token
    auth and out of Ray's loopback mode, its record shows the command a node runs to join,
    a node that runs it joins (with ``--block`` and a temp dir of its own, so the test holds
    its processes), a driver maps over both hosts with the token, a stranger without it
    is refused."""
    head, node1 = bed["head"], bed["node1"]
    bed.stop("ray")  # node1 runs one Ray node at a time (fixed agent ports)
    described = bed.work / "described-ray.json"
    server_args = [sys.executable, "-m", "tests.clusters.multinode_server", "ray"]
    env = bed.env(None) | {"HOME": str(bed.work / "sidebar-home")}  # its token made afresh
    server = head.start(
        [*server_args, head.address, "1", str(described)], bed.work / "server-ray.log", env
    )
    joined = None
    try:
        cluster = wait_for(lambda: _described(described, 1), 240, "the sidebar's Ray head")
        assert cluster["address"].startswith(f"{head.address}:")
        [*assignments, program, start, flag, address] = shlex.split(cluster["join"])
        assert (program, start, flag, address) == ("ray", "start", "--address", cluster["address"])
        token_file = cluster["token_file"]
        assert assignments == ["RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={token_file}"]
        node_env = bed.env(None) | dict(a.split("=", 1) for a in assignments)
        bed.ray_temp_dirs.append(new_ray_temp_dir())
        args = [str(BIN / program), start, flag, address, "--block", "--num-cpus", "1"]
        args += ["--temp-dir", bed.ray_temp_dirs[-1], "--disable-usage-stats"]
        joined = node1.start(args, bed.work / "joined-ray-node.log", node_env)
        wait_for(lambda: _described(described, 2), 240, "the node that ran the join command")

        token = ["--token-file", token_file]
        figures = bed.client("head", ["map", cluster["address"], "50", *token], bed.env(None))
        assert figures["hosts"] == sorted([head.address, node1.address])
        assert figures["ordered"] and figures["n"] == 50
        outcome = bed.client("outsider", ["refused", cluster["address"]], bed.env(None))
        assert outcome["error"] == "AuthError" and "token" in outcome["message"], outcome
    finally:
        if joined is not None:
            node1.stop(joined)
        head.stop(server)
