"""labkit verify: re-execute and report changed records and data hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import labkit
from labkit.errors import BundleError
from labkit.runs import batch, list_runs, load_bundle, run, verify
from labkit.runs.verify import values_match

BIN = Path(sys.executable).parent


def test_untouched_run_verifies_and_a_changed_data_file_is_named(bundle, tmp_path):
    result = run(bundle, {"scale": 3}, out=tmp_path / "run", progress=False)
    report = verify(result.path, progress=False)
    assert report.ok and report.runs_checked == 1 and report.files_checked == 1

    (load_bundle(bundle).working_dir / "data" / "values.txt").write_text("1 2 4.5\n")
    report = verify(result.path, progress=False)
    assert [change["kind"] for change in report.changes] == ["data", "record"]
    assert report.changes[0]["path"] == "data/values.txt"
    total = next(c for c in report.changes if c.get("name") == "total")
    assert (total["expected"], total["actual"]) == (19.5, 22.5)

    done = subprocess.run(
        [str(BIN / "labkit"), "verify", str(result.path)], capture_output=True, text=True
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("labkit: ") and "data file data/values.txt changed" in last
    assert "record 'total' changed: 19.5 -> 22.5" in done.stdout


def test_batch_verifies_each_successful_run_within_tolerance(shared_bundle, tmp_path):
    labkit.connect(backend="dask", workers=2)
    result = batch(shared_bundle, {"scale": [1, 2], "label": ["a", "boom"]}, out=tmp_path / "b")
    assert [entry["status"] for entry in result.runs] == ["ok", "failed", "ok", "failed"]
    results_path = result.path / "results.json"
    results = json.loads(results_path.read_text())
    results["runs"][0]["records"]["total"] *= 1 + 1e-9  # within the default tolerance
    results["runs"][2]["records"]["label"] = "z"
    results_path.write_text(json.dumps(results))
    report = verify(result.path, progress=False)
    assert report.runs_checked == 2 and report.files_checked == 1
    assert report.lines() == ['run 2: record \'label\' changed: "z" -> "a"']
    assert [entry["kind"] for entry in list_runs(tmp_path)] == ["batch"]


def test_a_bundle_alone_checks_its_data_and_other_folders_are_refused(bundle, tmp_path):
    assert verify(bundle, progress=False).ok
    (load_bundle(bundle).working_dir / "data" / "values.txt").unlink()
    report = verify(bundle, progress=False)
    assert report.lines() == [report.lines()[0]]
    assert report.lines()[0].startswith("data file data/values.txt changed: sha256 ")
    assert report.lines()[0].endswith("-> missing")
    with pytest.raises(BundleError, match="is not a run, batch or bundle folder"):
        verify(tmp_path, progress=False)


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        (1.0, 1.0 + 1e-9, True),
        (1.0, 1.001, False),
        (0.0, 1e-13, True),
        ([1, {"a": 2.0}], [1, {"a": 2.0000000001}], True),
        ([1, 2], [1, 2, 3], False),
        ({"a": 1}, {"b": 1}, False),
        (True, 1, False),
        ("NaN", "NaN", True),
        ("a", "b", False),
    ],
)
def test_values_match_with_tolerance(old, new, same):
    assert values_match(old, new, rtol=1e-6, atol=1e-12) is same
