"""``labkit demo``: the main job, headless, end to end on embedded defaults.

A local cluster; a mock survey generated and preprocessed into an on-disk store by the
cluster's workers, chunk by chunk (the same path at 5k spectra and at 1.6 million); a sample
of it written as DESI coadds and preprocessed from those files into a second store; a spectral
VAE trained on the cluster, streaming from the store; a milvus-lite index of the latent
vectors under OUT; neighbour and anomaly queries checked against the survey's truth; and a
small notebook frozen and run as a 2-point batch on the same cluster. Each stage is timed; the
summary is printed as a table and written to ``OUT/summary.json``.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import labkit
from labkit.clusters.base import format_bytes
from labkit.errors import ParameterError, StoreMismatchError

DEFAULT_SPECTRA = 5000
ANOMALY_FRACTION = 0.02
SEED = 0
GRID = (900.0, 9800.0, 5.5e-4)  # rest-frame Å and dex per pixel: ~1900 pixels
LATENT_DIM = 16
EPOCHS = 30
NEIGHBOURS = 10
QUERIES = 2000  # spectra whose neighbours are asked for (all of them when fewer)
FILE_SAMPLE = 1000  # spectra also written as DESI coadds and read back from the files
SHOWN_ANOMALIES = 10
BATCH_PARAMETER = "seed"
BATCH_VALUES = (1, 2)  # fresh surveys the frozen notebook scores with the trained model
BATCH_SPECTRA = 400
STAGES = 7


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC: the chance a random positive outscores a random negative (ties count half).

    Non-finite scores are left out; NaN when either class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    keep = np.isfinite(scores)
    scores, positive = scores[keep], positive[keep]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    sorted_scores = scores[order]
    # tied scores share the mean of their ranks
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first[counts > 1], counts[counts > 1], strict=True):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class _Stages:
    """Numbered stage headers on stdout and the seconds each stage took."""

    def __init__(self, total: int):
        self.total, self.done, self.seconds = total, 0, {}

    @contextmanager
    def __call__(self, key: str, title: str) -> Iterator[None]:
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {title}", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[key] = round(time.perf_counter() - start, 2)
        print(f"      {self.seconds[key]:.1f} s", flush=True)


def run_demo(
    backend: str | None = None,
    n_spectra: int = DEFAULT_SPECTRA,
    out: str | Path = "labkit-demo",
    *,
    epochs: int = EPOCHS,
) -> dict[str, Any]:
    """Run every stage on a local cluster of ``backend``; return (and save) the summary.

    Everything the demo writes goes under ``out``: the survey's store and files, checkpoints,
    the index, the frozen bundle and its batch. Running it again replaces those, except that
    the store of the same survey is reused: an interrupted run's store is completed.
    """
    if isinstance(n_spectra, bool) or not isinstance(n_spectra, int) or n_spectra < 100:
        raise ParameterError(f"the demo needs at least 100 spectra, got {n_spectra!r}")
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = _Stages(STAGES)
    summary: dict[str, Any] = {"spectra": n_spectra}
    started = time.perf_counter()

    with stage("cluster_s", f"start a local {backend or 'default'} cluster"):
        cluster = labkit.connect(backend=backend)
        resources = cluster.resources()
        summary |= {
            "backend": cluster.backend,
            "address": cluster.address,
            "dashboard": cluster.dashboard_url,
            "workers": resources["workers"],
            "cpus": resources["cpus"],
            "memory": format_bytes(resources["memory_bytes"]),
        }
        print(f"      {cluster.backend} at {cluster.address}: {resources['cpus']:g} CPUs")
    try:
        store = _survey(stage, out_dir, n_spectra, summary)
        result = _train(stage, store, out_dir, epochs, summary)
        index = _index(stage, result.model, store, out_dir)
        try:
            _queries(stage, index, store, summary)
        finally:
            index.close()
        _freeze_and_batch(stage, out_dir, cluster, summary)
    finally:
        labkit.disconnect()
    summary["stage_seconds"] = stage.seconds
    summary["total_s"] = round(time.perf_counter() - started, 2)
    summary["driver_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    summary["out"] = str(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return summary


def _survey(stage: _Stages, out_dir: Path, n: int, summary: dict[str, Any]):
    from labkit.spectra import mock_source, preprocess, rest_grid, write

    source = mock_source(n, ANOMALY_FRACTION, SEED)
    with stage("preprocess_s", f"mock survey of {n} spectra into a store, made by the workers"):
        path, grid = out_dir / "survey.zarr", rest_grid(*GRID)
        try:  # the same survey again: an interrupted run's store is completed, not redone
            store = preprocess(source, grid=grid, out=path)
        except StoreMismatchError:  # another survey (size or seed) was written there
            store = preprocess(source, grid=grid, out=path, overwrite=True)
        bytes_each = store.nbytes_on_disk() / len(store)
        summary |= {"pixels": store.n_pixels, "store_bytes_per_spectrum": round(bytes_each)}
        print(f"      {store.path}: {store.n_chunks} chunks, {bytes_each / 1e3:.1f} kB a spectrum")
    sample = min(n, FILE_SAMPLE)
    with stage("files_s", f"{sample} of them as DESI coadds, preprocessed from the files"):
        files = write(
            source.rows(0, sample), out_dir / "survey-files", format="desi", overwrite=True
        )
        from_files = preprocess(
            files, grid=store.wave, out=out_dir / "survey-files.zarr", overwrite=True
        )
        same = np.array_equal(from_files[0:sample].flux, store[0:sample].flux, equal_nan=True)
        summary["files_match_store"] = bool(same)
        print(f"      {len(files)} files; their store matches the mock's: {same}")
    return store


def _train(stage: _Stages, rest, out_dir: Path, epochs: int, summary: dict[str, Any]):
    from labkit.vae import TrainConfig, train

    with stage(
        "train_s", f"train the spectral VAE on the cluster from the store ({epochs} epochs)"
    ):
        config = TrainConfig(latent_dim=LATENT_DIM, epochs=epochs, seed=SEED)
        result = train(rest, config, checkpoint_dir=out_dir / "checkpoints")
        result.model.save(out_dir / "model.pt")
    last = result.history[-1]
    best = min(h["val_loss"] for h in result.history if h["val_loss"] is not None)
    summary |= {
        "train_backend": result.backend,
        "mlflow_train_run": result.mlflow_run_id,
        "epochs": len(result.history),
        "loss": round(float(last["loss"]), 4),
        "val_loss": round(float(best), 4),
    }
    return result


def _index(stage: _Stages, model, rest, out_dir: Path):
    from labkit.vectors import build_index

    path = out_dir / "spectra.db"
    with stage("index_s", f"score and index latent vectors in milvus-lite ({path.name})"):
        shutil.rmtree(path, ignore_errors=True)  # a fresh index each run
        return build_index(model, rest, path)


def _truth(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """targetid, class code and is_anomaly of every spectrum, read chunk by chunk."""
    ids, codes, anomalous, classes = [], [], [], {}
    for chunk in range(store.n_chunks):
        meta = store.chunk_meta(chunk)
        ids.append(np.asarray(meta["targetid"]))
        codes.append(np.array([classes.setdefault(str(c), len(classes)) for c in meta["label"]]))
        anomalous.append(np.asarray(meta["is_anomaly"], dtype=bool))
    return np.concatenate(ids), np.concatenate(codes), np.concatenate(anomalous)


def _queries(stage: _Stages, index, store, summary: dict[str, Any]) -> None:
    ids, labels, positive = _truth(store)
    with stage("queries_s", f"neighbour and anomaly queries ({NEIGHBOURS} neighbours each)"):
        rng = np.random.default_rng(SEED)
        asked = np.sort(rng.choice(len(ids), min(QUERIES, len(ids)), replace=False))
        by_id = np.argsort(ids)  # rows of ids in id order: a lookup without a dict of N

        def label_of(targetid: int) -> int:
            return labels[by_id[np.searchsorted(ids, targetid, sorter=by_id)]]

        hits = index.search(ids[asked], k=NEIGHBOURS)
        same = [
            np.mean([label_of(h.id) == labels[q] for h in found]) if found else np.nan
            for q, found in zip(asked, hits, strict=True)
        ]
        columns = index.columns(["anomaly_score"])
        order = np.argsort(columns["id"])
        at = np.searchsorted(columns["id"][order], ids)
        score = np.asarray(columns["anomaly_score"], dtype=np.float64)[order][at]
        n_true = int(positive.sum())
        ranked = np.argsort(-np.where(np.isfinite(score), score, -np.inf), kind="stable")
        found = int(positive[ranked[:n_true]].sum())
        top = index.top_anomalies(SHOWN_ANOMALIES)
        summary["index_rows"] = int(len(columns["id"]))
        summary["anomalies_true"] = n_true
    normal = ~positive[asked]
    summary |= {
        "neighbour_purity": round(float(np.nanmean(np.asarray(same)[normal])), 3),
        "anomaly_auc": round(roc_auc(score, positive), 3),
        "anomalies_found": found,
        "top_anomalies": [
            {
                "targetid": int(r["id"]),
                "score": round(float(r["anomaly_score"]), 2),
                "label": r["label"],
                "z": round(float(r["z"]), 3),
            }
            for r in top
        ],
    }
    print(f"\n      the {len(top)} strangest spectra, with their true labels:")
    print(f"      {'targetid':>19}  {'score':>6}  {'z':>6}  label")
    for row in summary["top_anomalies"]:
        print(
            f"      {row['targetid']:>19}  {row['score']:>6.2f}  {row['z']:>6.3f}  {row['label']}"
        )


def _freeze_and_batch(stage: _Stages, out_dir: Path, cluster, summary: dict[str, Any]) -> None:
    from labkit.runs import batch, freeze

    values = list(BATCH_VALUES)
    with stage("batch_s", f"freeze a notebook and batch it over {BATCH_PARAMETER}={values}"):
        notebook = out_dir / "score-new-survey.ipynb"
        _write_notebook(notebook)
        bundles = out_dir / "bundles"
        shutil.rmtree(bundles / "score-new-survey", ignore_errors=True)
        bundle = freeze(notebook, name="score-new-survey", out=bundles)
        result = batch(bundle, {BATCH_PARAMETER: values}, on=cluster, out=bundle / "batch")
    runs = result.runs
    summary |= {
        "bundle": str(bundle),
        "batch": str(result.path),
        "batch_ok": sum(r["status"] == "ok" for r in runs),
        "batch_runs": len(runs),
        "batch_auc": [r["records"].get("auc") for r in runs],
        "mlflow_batch_runs": [r.get("mlflow_run_id") for r in runs],
    }
    for run in runs:
        if run["status"] != "ok":
            print(f"      run {run['parameters']} {run['status']}: {run['error']}")


def _write_notebook(path: Path) -> None:
    """The frozen notebook: score a fresh mock survey (seed) with the trained model."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    parameters = new_code_cell(
        f'model_path = "model.pt"\n{BATCH_PARAMETER} = 1\nn_spectra = {BATCH_SPECTRA}\n'
        "anomaly_fraction = 0.05"
    )
    parameters.metadata["tags"] = ["parameters"]
    cells = [
        new_markdown_cell(
            "# Does the detector generalise?\n\nScore a fresh mock survey, drawn with another "
            "seed, with the model the demo trained, and record how well the anomalies rank."
        ),
        parameters,
        new_code_cell(
            "import numpy as np\n\nimport labkit\nfrom labkit.demo import roc_auc\n"
            "from labkit.spectra import mock_survey, preprocess\nfrom labkit.vae import SpectrumVAE"
        ),
        new_code_cell(
            "model = SpectrumVAE.load(model_path)\n"
            f"survey = mock_survey(n_spectra, anomaly_fraction, {BATCH_PARAMETER})\n"
            "rest = preprocess(survey, grid=model.wave.cpu().numpy(), cluster=False, "
            "progress=False)\n"
            "scores = model.anomaly_score(rest)\n"
            'truth = np.asarray(rest.meta["is_anomaly"], dtype=bool)\n'
            "top = np.argsort(-np.nan_to_num(scores, nan=-np.inf))[: truth.sum()]\n"
            'labkit.record("auc", roc_auc(scores, truth))\n'
            'labkit.record("anomalies_found", int(truth[top].sum()))\n'
            'labkit.record("anomalies", int(truth.sum()))'
        ),
    ]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, path)


def print_summary(summary: dict[str, Any]) -> None:
    """The final table: where it ran, how long each stage took, and what it found."""
    seconds = summary["stage_seconds"]
    auc = ", ".join("—" if a is None else f"{a:.3f}" for a in summary["batch_auc"])
    rows = {
        "backend": f"{summary['backend']} ({summary['workers']} workers, {summary['cpus']:g} "
        f"CPUs, {summary['memory']})",
        "spectra": f"{summary['spectra']} ({summary['anomalies_true']} anomalies), "
        f"{summary['pixels']} rest-frame pixels",
        **{f"  {key[:-2]} (s)": f"{value:.1f}" for key, value in seconds.items()},
        "  total (s)": f"{summary['total_s']:.1f}",
        "driver peak memory": f"{summary['driver_peak_rss_mb']} MB",
        "index rows": f"{summary['index_rows']}",
        "epochs": f"{summary['epochs']} on {summary['train_backend']}",
        "loss / best val_loss": f"{summary['loss']:.4f} / {summary['val_loss']:.4f}",
        "anomaly AUC": f"{summary['anomaly_auc']:.3f}",
        "anomalies found": f"{summary['anomalies_found']} of {summary['anomalies_true']} in the "
        f"top {summary['anomalies_true']} scores",
        "neighbour purity": f"{summary['neighbour_purity']:.3f} (share of {NEIGHBOURS} "
        "neighbours of a normal spectrum with its class)",
        "batch": f"{summary['batch_ok']}/{summary['batch_runs']} runs ok; AUC on fresh "
        f"surveys: {auc}",
        "outputs": summary["out"],
    }
    if summary.get("mlflow_train_run"):
        from labkit.tracking import tracking_uri

        rows["tracked in MLflow"] = (
            f"{tracking_uri()} (training {summary['mlflow_train_run']}, "
            f"{len(summary['mlflow_batch_runs'])} batch runs)"
        )
    print_table("labkit demo", rows)


def print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(key) for key in rows)
    print(f"\n{title}\n{'-' * (width + 50)}")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
