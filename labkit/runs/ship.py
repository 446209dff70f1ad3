"""A bundle's data files on cluster hosts that do not see its source folder.

Before a batch submits anything, every host is asked which of the manifest's data files it
cannot see at the notebook's path (a file missing, or of another size). Hosts that see them
all run the notebook in its source folder, as today. To the others labkit ships the files:
each such host keeps them, with their sha256 checked on arrival, in a folder of its own that
the runs on that host use as their working directory. Files named by an absolute path, or
more than ``SHIP_LIMIT_BYTES`` of them, are not shipped: the batch is refused before it
starts, with an error naming the files and the hosts that cannot see them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.errors import BundleError, UnsupportedOperationError

SHIP_LIMIT_BYTES = 256 * 2**20  # beyond this, data belongs on a filesystem the hosts share
COMPLETE = ".complete"


def shipped_folder(key: str) -> Path:
    """Where a host keeps the shipped files of the bundle data identified by ``key``."""
    return Path(tempfile.gettempdir()) / "labkit-bundles" / key


def unseen_files(working_dir: str, files: Sequence[Mapping[str, Any]]) -> list[str]:
    """What this host does not see as the notebook would: data files (a file missing, or of
    another size), and ``working_dir`` itself when the folder is not there (runs on each host)."""
    unseen = [] if os.path.isdir(working_dir) else [working_dir]
    for entry in files:
        path = Path(working_dir, entry["path"])  # an absolute path stays what it is
        try:
            if path.stat().st_size == entry["bytes"]:
                continue
        except OSError:
            pass
        unseen.append(entry["path"])
    return unseen


def place(
    key: str, working_dir: str, files: Sequence[Mapping[str, Any]], payload: Mapping[str, bytes]
) -> str | None:
    """Keep ``payload`` (path -> bytes) on this host if it does not see the files itself.

    Runs on each host; returns the folder used, or None where the source folder serves.
    Each file's sha256 is checked against the manifest before the folder is put in place
    (atomically: workers sharing a host may place it at once).
    """
    if not unseen_files(working_dir, files):
        return None
    folder = shipped_folder(key)
    if (folder / COMPLETE).exists():
        return str(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        for entry in files:
            data = payload[entry["path"]]
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise BundleError(
                    f"data file {entry['path']} arrived damaged (its sha256 is not the "
                    "manifest's); nothing was kept",
                    path=entry["path"],
                )
            target = staging / entry["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        (staging / COMPLETE).touch()
        try:
            os.rename(staging, folder)
        except OSError:  # another worker on this host placed it first
            if not (folder / COMPLETE).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(folder)


def data_key(files: Sequence[Mapping[str, Any]]) -> str:
    """One name for one set of data files (their paths and hashes)."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e["path"]):
        digest.update(f"{entry['path']}\0{entry['sha256']}\n".encode())
    return digest.hexdigest()[:24]


def ship_data(cluster: Any, manifest: Mapping[str, Any]) -> str | None:
    """Make the bundle's data files visible to every host of ``cluster``; see the module.

    Returns the key of the shipped files (a run uses ``shipped_folder(key)`` where it
    exists), or None when every host sees the source folder.
    """
    files = list(manifest.get("data_files", []))
    working_dir = str(manifest["working_dir"])
    try:
        report = cluster.run_on_each_host(functools.partial(unseen_files, working_dir, files))
    except UnsupportedOperationError:  # a cluster that cannot address its hosts: as before
        return None
    blind = {host: unseen for host, unseen in report.items() if unseen}
    if not blind:
        return None
    hosts = ", ".join(sorted(blind))
    names = sorted({name for unseen in blind.values() for name in unseen} - {working_dir})
    absolute = [name for name in names if os.path.isabs(name)]
    if absolute:
        raise BundleError(
            f"host(s) {hosts} cannot see data file(s) {', '.join(absolute)}, named by an "
            "absolute path, so they cannot be shipped there: put them on a filesystem every "
            "host shares, or name them relative to the notebook",
            path=absolute[0],
        )
    total = sum(entry["bytes"] for entry in files)
    if total > SHIP_LIMIT_BYTES:
        raise BundleError(
            f"host(s) {hosts} cannot see the notebook's folder {working_dir} and its "
            f"{len(files)} data file(s) ({total / 2**20:.0f} MiB, e.g. {files[0]['path']}) are too "
            f"large to ship (limit {SHIP_LIMIT_BYTES // 2**20} MiB): put them on a "
            "filesystem every host shares",
            path=working_dir,
        )
    payload = {entry["path"]: Path(entry["resolved"]).read_bytes() for entry in files}
    key = data_key(files)
    cluster.run_on_each_host(functools.partial(place, key, working_dir, files, payload))
    return key
