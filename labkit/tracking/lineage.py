"""Tags that lead from an MLflow run back to what made it: the data, the notebook, the code."""

from __future__ import annotations

from typing import Any


def data_identity(source: Any) -> dict[str, Any]:
    """A training's data: a store's path and the sha256 of its ``store.json``, or the shape
    of in-memory arrays."""
    from labkit.runs.bundle import sha256_file
    from labkit.spectra.store import MANIFEST

    tags: dict[str, Any] = {"labkit.data.rows": len(source), "labkit.data.pixels": source.n_pixels}
    path = getattr(source, "path", None)
    if path is not None:
        tags["labkit.data.store"] = str(path)
        tags["labkit.data.store_sha256"] = sha256_file(path / MANIFEST)
    else:
        tags["labkit.data.in_memory"] = f"{len(source)} x {source.n_pixels}"
    return tags


def notebook_tags(bundle: Any) -> dict[str, Any]:
    """A bundle's lineage in MLflow's own source tags and labkit's: the source notebook, its
    git commit, the frozen notebook's sha256."""
    from labkit.runs.bundle import sha256_file

    manifest = bundle.manifest
    git = manifest.get("git") or {}
    return {
        "mlflow.source.name": manifest.get("source", {}).get("path"),
        "mlflow.source.type": "NOTEBOOK",
        "mlflow.source.git.commit": git.get("commit"),
        "labkit.git_dirty": git.get("dirty"),
        "labkit.bundle": str(bundle.path),
        "labkit.bundle_sha256": sha256_file(bundle.notebook_path),
        "labkit.source_sha256": manifest.get("source", {}).get("sha256"),
    }
