"""A frozen bundle on disk: ``notebook.ipynb``, ``manifest.json``, ``requirements.lock``.

Also the file names every part of ``labkit.runs`` agrees on, and the time stamps they use.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import BundleError

if TYPE_CHECKING:
    import nbformat

NOTEBOOK = "notebook.ipynb"
MANIFEST = "manifest.json"
LOCK = "requirements.lock"
RUN_RESULT = "result.json"
BATCH_RESULTS = "results.json"
SWEEP_FILE = "sweep.json"  # a Ray Tune sweep's folder (labkit.vae.tune)
FORMAT_VERSION = 1


def sha256_file(path: str | os.PathLike, advance: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; ``advance(n)`` hears of each block."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            if advance is not None:
                advance(len(block))
    return digest.hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def stamp() -> str:
    """A sortable, filesystem-safe time stamp for new run and batch folders."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")


def write_json(path: Path, payload: Any) -> None:
    """Write through a temporary file, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def notebook_path(self) -> Path:
        return self.path / NOTEBOOK

    @property
    def working_dir(self) -> Path:
        return Path(self.manifest["working_dir"])

    @property
    def parameters(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("parameters", []))

    @property
    def kernel(self) -> str | None:
        return self.manifest.get("kernel")

    def notebook(self) -> nbformat.NotebookNode:
        import nbformat

        return nbformat.read(self.notebook_path, as_version=4)


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle directory; raises BundleError naming what is missing."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise BundleError(f"no bundle at {path}: not a directory", path=str(path))
    for name in (NOTEBOOK, MANIFEST):
        if not (path / name).is_file():
            raise BundleError(
                f"{path} is not a labkit bundle: {name} is missing (make one with labkit freeze)",
                path=str(path),
            )
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except ValueError as exc:
        raise BundleError(f"cannot read {path / MANIFEST}: {exc}", path=str(path)) from exc
    if not isinstance(manifest, dict) or "working_dir" not in manifest:
        raise BundleError(f"{path / MANIFEST} has no working_dir entry", path=str(path))
    return Bundle(path, manifest)
