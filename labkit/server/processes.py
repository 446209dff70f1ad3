"""OS processes the server starts for managed clusters: spawned alone, stopped by PID.

Each process leads its own session (so its children can be found and cleaned up by process
group) and is told, through Linux's parent-death signal, to stop when the Jupyter server
dies: a managed cluster never outlives its server, even one that was killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from labkit.clusters.announce import pid_alive  # noqa: F401  (one definition; re-exported here)

_PR_SET_PDEATHSIG = 1


def executable(name: str) -> str:
    """A console script of this Python environment (``ray``, ``dask``), not whatever is on PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """One process this server started; its log file explains a failed start."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the leader only, then SIGKILL whatever is left of its process group.

        ``ray start --block`` stops its own children within seconds on SIGTERM; signalling the
        whole group at once would make it wait out a long drain instead.
        """
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        else:
            self.popen.wait()
        if group_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while group_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
