"""``labkit demo``: the main job end to end on a local Ray cluster, through the real command."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from labkit.demo import roc_auc
from labkit.spectra.mock import ANOMALIES
from tests.conftest import BIN, start_process, stop_process

LABKIT = str(BIN / "labkit")
STAGES = {
    "cluster_s",
    "preprocess_s",
    "files_s",
    "train_s",
    "index_s",
    "queries_s",
    "batch_s",
}


def test_roc_auc_against_hand_counted_cases():
    truth = np.array([False, False, True, True])
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), truth) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), truth) == 0.0
    assert roc_auc(np.ones(4), truth) == 0.5  # all tied: chance
    # one of the four (positive, negative) pairs is ordered wrongly
    assert roc_auc(np.array([0.1, 0.5, 0.4, 0.9]), truth) == 0.75
    # non-finite scores are left out; one class only gives NaN
    assert roc_auc(np.array([0.1, np.nan, 0.8, 0.9]), truth) == 1.0
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_too_few_spectra_is_refused_with_the_option_named():
    result = subprocess.run([LABKIT, "demo", "--spectra", "50"], capture_output=True, text=True)
    assert result.returncode == 2 and "--spectra" in result.stderr


@pytest.mark.timeout(900)
def test_demo_runs_the_main_job_end_to_end(tmp_path):
    out = tmp_path / "demo"
    log = tmp_path / "demo.log"
    proc = start_process([LABKIT, "demo", "--spectra", "2000", "--out", str(out)], log)
    try:
        returncode = proc.wait(timeout=840)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert returncode == 0, text[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["train_backend"] == "ray"
    assert summary["spectra"] == 2000 and summary["anomalies_true"] == 40
    assert set(summary["stage_seconds"]) == STAGES
    assert all(seconds > 0 for seconds in summary["stage_seconds"].values())
    assert summary["total_s"] >= sum(summary["stage_seconds"].values()) * 0.99
    # it learned: losses fell, anomalies rank high, neighbours share their class
    assert 1 <= summary["epochs"] <= 30
    assert 0 < summary["val_loss"] < 5
    assert summary["anomaly_auc"] > 0.8
    assert summary["anomalies_found"] >= 10
    assert summary["neighbour_purity"] > 0.8
    top = summary["top_anomalies"]
    assert len(top) == 10 and sum(row["label"] in ANOMALIES for row in top) >= 5
    # the frozen notebook ran as a 2-point batch and scored fresh surveys
    assert summary["batch_runs"] == 2 and summary["batch_ok"] == 2
    assert all(auc > 0.7 for auc in summary["batch_auc"])
    bundle = out / "bundles" / "score-new-survey"
    results = json.loads((bundle / "batch" / "results.json").read_text())
    assert [run["parameters"] for run in results["runs"]] == [{"seed": 1}, {"seed": 2}]
    assert (bundle / "manifest.json").is_file()
    assert (out / "spectra.db").exists() and (out / "model.pt").is_file()
    # the survey went through a store, every spectrum of it into the index
    assert summary["index_rows"] == 2000
    assert (out / "survey.zarr" / "store.json").is_file()
    assert len(list((out / "survey-files").glob("*.fits"))) == 2  # 1000 spectra as coadds
    assert summary["files_match_store"] is True
    # every training and batch run is in MLflow, with lineage to its data and notebook
    client = MlflowClient(os.environ["LABKIT_TRACKING_URI"])
    trained = client.get_run(summary["mlflow_train_run"])
    assert trained.data.tags["labkit.data.store"] == str((out / "survey.zarr").resolve())
    losses = client.get_metric_history(trained.info.run_id, "loss")
    assert [m.step for m in losses] == list(range(1, summary["epochs"] + 1))
    for run, run_id in zip(results["runs"], summary["mlflow_batch_runs"], strict=True):
        tracked = client.get_run(run_id)
        assert run["mlflow_run_id"] == run_id and tracked.info.status == "FINISHED"
        assert tracked.data.tags["mlflow.parentRunId"] == results["mlflow"]["run_id"]
        assert tracked.data.metrics["auc"] == pytest.approx(run["records"]["auc"])

    # what the terminal shows: stage headers, the anomalies with their labels, the table
    for stage in range(1, len(STAGES) + 1):
        assert f"[{stage}/{len(STAGES)}]" in text
    for row in top:
        assert str(row["targetid"]) in text and row["label"] in text
    fields = ("anomaly AUC", "anomalies found", "neighbour purity", "batch", "total (s)")
    for field in (*fields, "driver peak memory", "index rows"):
        assert field in text
