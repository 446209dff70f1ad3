"""Frozen bundles, runs, batches and sweeps under a folder: the data behind ``%labkit runs`` and
``GET /labkit/api/runs``.

Each entry is plain JSON, the form of a ``ListedBundle``, ``ListedRun``, ``ListedBatch`` or
``ListedSweep`` (mirrored by the extension's ``IRun`` in extension/src/api.ts).
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from labkit.runs.bundle import BATCH_RESULTS, MANIFEST, NOTEBOOK, RUN_RESULT, SWEEP_FILE
from labkit.runs.results import BatchStatus, RunStatus
from labkit.tracking.ui import run_page

RUNS_DIR_ENV = "LABKIT_RUNS_DIR"


@dataclass
class ListedBundle:
    """A frozen bundle: its notebook's source, parameter defaults and data files."""

    kind: Literal["bundle"]
    name: str
    path: str
    created: str | None
    status: Literal["frozen"]
    source: str | None
    parameters: dict[str, Any]
    data_files: int


@dataclass
class ListedRun:
    """One ``labkit run``, from its result.json."""

    kind: Literal["run"]
    name: str
    path: str
    created: str | None
    status: RunStatus | None
    bundle: str | None
    parameters: dict[str, Any]
    duration_s: float | None
    mlflow_page: str | None = None  # its MLflow run page (see labkit.tracking.ui)


@dataclass
class ListedBatch:
    """One batch, from its results.json: ``runs`` counts its runs by status."""

    kind: Literal["batch"]
    name: str
    path: str
    created: str | None
    status: BatchStatus | None
    bundle: str | None
    runs: dict[str, Any]
    cluster: dict[str, Any] | None
    mlflow_page: str | None = None  # its MLflow run page (see labkit.tracking.ui)


@dataclass
class ListedSweep:
    """One Ray Tune sweep (``labkit.vae.tune``), from its sweep.json."""

    kind: Literal["sweep"]
    name: str
    path: str
    created: str | None
    status: Literal["running", "done", "interrupted"] | None
    trials: int | None
    best: dict[str, Any] | None
    mlflow_page: str | None = None


_SKIP = {"node_modules", "__pycache__", ".git", ".ipynb_checkpoints"}


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$LABKIT_RUNS_DIR``, else the current folder."""
    return Path(root or os.environ.get(RUNS_DIR_ENV) or ".").expanduser().resolve()


def list_runs(root: str | os.PathLike | None = None, *, depth: int = 4) -> RunsTable:
    """Every bundle, run and batch at most ``depth`` folders below ``root``, newest first."""
    base = runs_root(root)
    entries: list[dict[str, Any]] = []
    for folder, subfolders, files in os.walk(base):
        here = Path(folder)
        level = len(here.relative_to(base).parts)
        subfolders[:] = sorted(
            name for name in subfolders if name not in _SKIP and not name.startswith(".")
        )
        listed = _describe(here, set(files))
        if listed is not None:
            entries.append(asdict(listed))
            if listed.kind != "bundle":
                subfolders[:] = []  # a run or batch folder holds only its notebooks
        if level >= depth:
            subfolders[:] = []
    # Newest first; at equal times a run or batch goes before the bundle it came from.
    entries.sort(key=lambda e: (e.get("created") or "", len(Path(e["path"]).parts)), reverse=True)
    return RunsTable(entries)


def _describe(
    folder: Path, files: set[str]
) -> ListedBundle | ListedRun | ListedBatch | ListedSweep | None:
    if MANIFEST in files and NOTEBOOK in files:
        manifest = _read(folder / MANIFEST)
        if manifest is None or "working_dir" not in manifest:
            return None
        return ListedBundle(
            kind="bundle",
            name=manifest.get("name", folder.name),
            path=str(folder),
            created=manifest.get("created"),
            status="frozen",
            source=manifest.get("source", {}).get("path"),
            parameters={p["name"]: p.get("default") for p in manifest.get("parameters", [])},
            data_files=len(manifest.get("data_files", [])),
        )
    if SWEEP_FILE in files:
        sweep = _read(folder / SWEEP_FILE)
        if sweep is None or sweep.get("kind") != "sweep":
            return None
        return ListedSweep(
            kind="sweep",
            name=str(sweep.get("name") or folder.name),
            path=str(folder),
            created=sweep.get("created"),
            status=sweep.get("status"),
            trials=sweep.get("trials") or sweep.get("num_samples"),
            best=sweep.get("best"),
            mlflow_page=run_page(sweep.get("mlflow")),
        )
    for name, kind in ((BATCH_RESULTS, "batch"), (RUN_RESULT, "run")):
        if name in files:
            result = _read(folder / name)
            if result is None or result.get("kind") != kind:
                return None
            common = {
                "name": f"{result.get('name', '?')}/{folder.name}",
                "path": str(folder),
                "created": result.get("created"),
                "status": result.get("status"),
                "bundle": result.get("bundle"),
            }
            common["mlflow_page"] = run_page(result.get("mlflow"))
            if kind == "batch":
                runs, cluster = result.get("summary", {}), result.get("cluster")
                return ListedBatch(kind="batch", **common, runs=runs, cluster=cluster)
            parameters, duration = result.get("parameters", {}), result.get("duration_s")
            return ListedRun(kind="run", **common, parameters=parameters, duration_s=duration)
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _details(entry: dict[str, Any]) -> str:
    if entry["kind"] == "sweep":
        best = entry.get("best") or {}
        shown = f"; best val_loss {best['val_loss']:.4g}" if best.get("val_loss") else ""
        return f"{entry.get('trials')} trials{shown}"
    if entry["kind"] == "batch":
        runs = entry.get("runs", {})
        counts = ", ".join(f"{k} {v}" for k, v in runs.items() if k != "duration_s" and v)
        return f"{counts}; on {(entry.get('cluster') or {}).get('backend', '?')}"
    parameters = entry.get("parameters") or {}
    return ", ".join(f"{name}={value}" for name, value in parameters.items()) or "no parameters"


class RunsTable(list):
    """A list of entries that shows itself as a table in a notebook or a terminal."""

    columns = ("kind", "name", "status", "created", "details", "path")

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (
                entry["kind"],
                str(entry["name"]),
                str(entry.get("status")),
                str(entry.get("created") or ""),
                _details(entry),
                entry["path"],
            )
            for entry in self
        ]

    def __str__(self) -> str:
        if not self:
            return "no frozen bundles, runs or batches here"
        rows = [self.columns, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.columns))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        )

    def _repr_html_(self) -> str:
        if not self:
            return "<p>no frozen bundles, runs or batches here</p>"
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self._rows()
        )
        return f"<table class='labkit-runs'><tr>{head}</tr>{body}</table>"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))
