"""Real clusters for the test session: `ray start --head`, `dask scheduler` + `dask worker`.

Each runs as its own process group on free loopback ports and is stopped by PID at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from labkit.clusters.credentials import Credentials
from labkit.clusters.ray_processes import ray_process_env

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing, so none repeats).

    They come from the kernel's ephemeral range, which lies above Ray's worker ports.
    """
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def wait_for_service(proc: subprocess.Popen, log: Path, condition: Callable[[], object], what: str):
    """Poll ``condition`` while ``proc`` lives; its log tail explains a failed start."""

    def ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return condition()

    try:
        return wait_for(ready, 120, what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{log.read_text()[-3000:]}") from None


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except RuntimeError:
            raise
        except Exception as exc:  # not up yet
            result, last = None, exc
        else:
            last = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout} s (last error: {last})")
        time.sleep(interval)


def start_process(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group, so stopping it stops its children
    )


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop ``proc`` by PID, then anything left in its process group.

    Only the leader gets SIGTERM: `ray start --block` then shuts its own processes down
    in about 2 s, whereas signalling all of them at once makes it wait out a 30 s drain.
    """
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
    if group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_for(lambda: not group_alive(proc.pid), timeout, f"process group {proc.pid}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class RayHead:
    gcs_address: str
    client_address: str
    token_file: Path
    proc: subprocess.Popen


@dataclass
class DaskScheduler:
    address: str
    scheduler: subprocess.Popen
    worker: subprocess.Popen


@pytest.fixture(scope="session")
def ray_token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    path.write_text(secrets.token_hex(32))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory, ray_token_file) -> Iterator[RayHead]:
    """A token-protected Ray head on loopback, as `ray start --head` runs one; one per test
    module (about 10 s each). A head shared by the whole session went bad in a CI run after
    some 17 minutes of other modules' drivers, clients and Ray Train runs: later Ray Client
    servers died at start and drivers could not attach; a fresh head per module keeps one
    module's leftovers from failing another's tests."""
    with running_ray_head(tmp_path_factory.mktemp("ray-head"), ray_token_file) as head:
        yield head


# what `ray start` says when its raylet did not register within Ray's fixed 30 s (seen once
# in a full-suite run on the 2 busy cores); such a head is started once more
RAYLET_TOO_SLOW = "The current node timed out during startup"


@contextmanager
def running_ray_head(work: Path, token_file: Path, cpus: int = 2) -> Iterator[RayHead]:
    """``ray start --head`` on loopback with token auth and a client server; stopped by PID."""
    from labkit.clusters.ray import new_ray_temp_dir
    from labkit.clusters.ray_slurm_node import print_client_server_errors

    for attempt in (1, 2):
        # pytest's own temp paths grow too long for the Unix sockets Ray keeps in its temp dir
        temp_dir = new_ray_temp_dir()
        log = work / f"ray-start-{attempt}.log"
        head = _start_ray_head(temp_dir, token_file, cpus, log)
        try:
            _wait_for_ray_head(head, log)
        except BaseException as exc:  # a head that did not come up is stopped, whatever failed
            stop_process(head.proc)
            shutil.rmtree(temp_dir, ignore_errors=True)
            if attempt == 2 or not isinstance(exc, RuntimeError):
                raise
            if RAYLET_TOO_SLOW not in log.read_text():
                raise
            continue
        try:
            yield head
        finally:
            stop_process(head.proc)
            # a Ray Client server that died starting says why only in the head's logs
            print_client_server_errors(temp_dir, file=sys.__stderr__)
            shutil.rmtree(temp_dir, ignore_errors=True)
        return


def _start_ray_head(temp_dir: str, token_file: Path, cpus: int, log: Path) -> RayHead:
    gcs, client, *others = free_ports(9)
    env = ray_process_env()
    env.pop("RAY_AUTH_TOKEN", None)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_file),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
    )
    ports = {
        "--port": gcs,
        "--ray-client-server-port": client,
    }
    flags = ["--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
    flags += ["--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port"]
    flags += ["--object-manager-port"]
    ports.update(zip(flags, others, strict=True))
    args = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    args += ["--dashboard-host", "127.0.0.1", "--temp-dir", temp_dir, "--num-cpus", str(cpus)]
    args += ["--disable-usage-stats"]
    for flag, port in ports.items():
        args += [flag, str(port)]
    proc = start_process(args, log, env)
    return RayHead(f"127.0.0.1:{gcs}", f"ray://127.0.0.1:{client}", token_file, proc)


def _wait_for_ray_head(head: RayHead, log: Path) -> None:
    """Until the GCS, the Ray Client server, the head node and the dashboard answer."""
    from labkit.clusters.ray_auth import RayToken, check_access

    token = RayToken(head.token_file.read_text().strip(), str(head.token_file), head.token_file)
    for address, is_client in ((head.gcs_address, False), (head.client_address, True)):
        wait_for_service(
            head.proc,
            log,
            lambda a=address, c=is_client: check_access(a, c, token, 2) or True,
            f"Ray head at {address}",
        )
    # the GCS answers before the head node and the dashboard have registered: wait for both
    wait_for_service(head.proc, log, lambda: _ray_ready(head), "Ray head node and dashboard")


def _ray_ready(head: RayHead) -> bool:
    """A live node and a dashboard address, as the GCS reports them (without a driver)."""
    import asyncio

    from labkit.server.probes import probe

    health = asyncio.run(
        probe("ray", head.gcs_address, 2, Credentials(token_file=str(head.token_file)))
    )
    return bool(health.workers and health.dashboard)


@contextmanager
def dask_processes(work: Path) -> Iterator[DaskScheduler]:
    """`dask scheduler` and one `dask worker` (2 threads), all on loopback; stopped after."""
    port, dashboard = free_ports(2)
    address = f"tcp://127.0.0.1:{port}"
    scheduler_log = work / "scheduler.log"
    scheduler = start_process(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--dashboard-address",
            f"127.0.0.1:{dashboard}",
        ],
        scheduler_log,
    )
    worker = None
    try:
        wait_for_service(
            scheduler,
            scheduler_log,
            lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True,
            "dask scheduler",
        )
        worker = start_process(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "2",
                "--nworkers",
                "1",
                "--dashboard-address",
                "127.0.0.1:0",
                "--memory-limit",
                "2GiB",
            ],
            work / "worker.log",
        )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        yield DaskScheduler(address, scheduler, worker)
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(scheduler)


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory) -> Iterator[DaskScheduler]:
    with dask_processes(tmp_path_factory.mktemp("dask")) as scheduler:
        yield scheduler


@dataclass
class DaskTlsScheduler:
    address: str
    client: object  # TlsFiles of a client the cluster's CA signed
    stranger: object  # TlsFiles of a client another CA signed


@pytest.fixture(scope="session")
def dask_tls_scheduler(tmp_path_factory) -> Iterator[DaskTlsScheduler]:
    """`dask scheduler --protocol tls` and one worker on loopback, mutual TLS throughout."""
    from labkit.clusters.certificates import make_certificates

    work = tmp_path_factory.mktemp("dask-tls")
    files = make_certificates(work / "tls", ["127.0.0.1"], ["scheduler", "worker", "client"])
    stranger = make_certificates(work / "other", ["127.0.0.1"], ["client"])["client"]
    port, dashboard = free_ports(2)
    address = f"tls://127.0.0.1:{port}"
    args = [str(BIN / "dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1"]
    args += ["--port", str(port), "--dashboard-address", f"127.0.0.1:{dashboard}"]
    scheduler = start_process(args + files["scheduler"].dask_flags(), work / "scheduler.log")
    worker = None
    try:
        wait_for_service(
            scheduler,
            work / "scheduler.log",
            lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True,
            "dask TLS scheduler",
        )
        args = [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1"]
        args += ["--dashboard-address", "127.0.0.1:0", "--memory-limit", "1GiB"]
        worker = start_process(args + files["worker"].dask_flags(), work / "worker.log")
        from distributed import Client

        with Client(address, security=files["client"].security(), timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        yield DaskTlsScheduler(address, files["client"], stranger)
    finally:
        if worker is not None:
            stop_process(worker)
        stop_process(scheduler)


@pytest.fixture
def no_ray_token(monkeypatch, tmp_path):
    """A process with no Ray token anywhere: no env vars, an empty home."""
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture(scope="session", autouse=True)
def _session_tracking_store(tmp_path_factory) -> Iterator[None]:
    """Tracking stays on, as for a user, into one store of the session's (not the checkout)."""
    if os.environ.get("LABKIT_TRACKING_URI"):
        yield
        return
    folder = tmp_path_factory.mktemp("tracking")
    os.environ["LABKIT_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        yield
    finally:
        os.environ.pop("LABKIT_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _detach_after_test():
    """Every test starts and ends with no active cluster."""
    import labkit

    labkit.disconnect()
    yield
    labkit.disconnect()


@pytest.fixture(scope="session")
def slurm() -> Iterator[object]:
    """A real slurmctld + slurmd (+ munged) on loopback, SLURM_CONF pointing at it."""
    from tests.slurmbed import available, slurm_bed

    if not available():
        pytest.skip("SLURM's daemons (slurm-wlm, munge) and root are needed")
    with slurm_bed() as bed:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(bed.conf)
        try:
            yield bed
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before


# In full-suite runs a Ray Client server died now and then starting a notebook's session
# ("Starting Ray client server failed"), never when a module ran alone; labkit tries such an
# attach once more (a suite run showed it doing so and passing), and a test head prints any
# such server's log on its way out. LABKIT_TEST_RAY_SLURM=0 leaves out every test that starts
# Ray nodes on SLURM.
ray_on_slurm_tests = pytest.mark.skipif(
    os.environ.get("LABKIT_TEST_RAY_SLURM") == "0",
    reason="LABKIT_TEST_RAY_SLURM=0 leaves out Ray on SLURM",
)


@pytest.fixture(scope="module")
def routable_interface() -> Iterator[str]:
    """An interface of this host with a test-bed address, for Ray nodes (which refuse
    loopback for a cluster of several nodes); deleted after the module."""
    from tests.netbed import routable_address

    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a test-bed address needs root and iproute2")
    with routable_address() as (name, _):
        yield name
