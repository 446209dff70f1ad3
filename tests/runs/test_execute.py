"""labkit run: parameters checked against the manifest, then one papermill execution."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.errors import BundleError, BundleParameterError
from labkit.runs import list_runs, load_bundle, read_records, run
from labkit.runs.parameters import check_values, parse_grid, parse_values, split_values

from .conftest import expected_total

BIN = Path(sys.executable).parent


def test_bundle_runs_with_plain_papermill(shared_bundle, tmp_path):
    manifest = json.loads((shared_bundle / "manifest.json").read_text())
    out = tmp_path / "out.ipynb"
    done = subprocess.run(
        [str(BIN / "papermill"), str(shared_bundle / "notebook.ipynb"), str(out)]
        + ["-p", "scale", "3", "--cwd", manifest["working_dir"], "--no-progress-bar"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    records = read_records(out)
    assert records["total"] == expected_total(3)
    assert records["series"] == [0, 3, 6]
    assert records["cwd"] == manifest["working_dir"]


def test_run_resolves_relative_data_from_the_source_folder(bundle, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = run(bundle, {"scale": 4, "label": "b"}, progress=False)
    assert result.ok and result.error is None
    assert result.path.parent == bundle / "runs"
    source_folder = json.loads((bundle / "manifest.json").read_text())["working_dir"]
    assert result.records["cwd"] == source_folder
    assert result.records["total"] == expected_total(4)
    assert result.records["label"] == "b"
    assert read_records(result.path) == result.records
    entry = json.loads((result.path / "result.json").read_text())
    assert entry["kind"] == "run" and entry["bundle"] == str(bundle)
    assert entry["parameters"] == {"scale": 4, "label": "b"}
    assert entry["status"] == "ok" and entry["records"] == result.records
    assert entry["worker_host"] and entry["duration_s"] > 0

    listed = list_runs(bundle.parent)  # what %labkit runs and GET /labkit/api/runs show
    assert [(e["kind"], e["name"], e["status"]) for e in listed] == [
        ("run", f"analysis/{result.path.name}", "ok"),
        ("bundle", "analysis", "frozen"),
    ]
    assert listed[0]["parameters"] == {"scale": 4, "label": "b"}
    assert listed[0]["bundle"] == str(bundle)
    assert "<td>scale=4, label=b</td>" in listed._repr_html_()
    json.dumps(listed)  # plain JSON for the REST handler


@pytest.mark.parametrize(
    ("values", "message", "name"),
    [
        ({"scael": 3}, "unknown parameter 'scael'; this bundle takes: scale, label", "scael"),
        ({"scale": "3"}, "parameter 'scale' expects int, got '3'", "scale"),
        ({"scale": 2.5}, "parameter 'scale' expects int, got 2.5", "scale"),
        ({"scale": True}, "parameter 'scale' expects int, got True", "scale"),
        ({"label": 5}, "parameter 'label' expects str, got 5", "label"),
    ],
)
def test_wrong_name_or_type_fails_before_executing(shared_bundle, values, message, name):
    with pytest.raises(BundleParameterError, match=message) as info:
        run(shared_bundle, values, progress=False)
    assert info.value.name == name
    assert not (shared_bundle / "runs").exists()


def test_values_from_the_command_line_take_the_parameter_type():
    spec = [
        {"name": "n", "type": "int"},
        {"name": "rate", "type": "float"},
        {"name": "flag", "type": "bool"},
        {"name": "tag", "type": "str"},
        {"name": "bands", "type": "list"},
        {"name": "anything", "type": "any"},
    ]
    pairs = [("n", "3"), ("rate", "2"), ("flag", "no"), ("tag", "007"), ("bands", "[1, 2]")]
    pairs.append(("anything", "{'a': 1}"))
    assert parse_values(spec, pairs) == {
        "n": 3,
        "rate": 2.0,
        "flag": False,
        "tag": "007",
        "bands": [1, 2],
        "anything": {"a": 1},
    }
    assert check_values(spec, {"rate": 1, "bands": (1, 2)}) == {"rate": 1, "bands": [1, 2]}
    with pytest.raises(BundleParameterError, match="'flag' expects bool, got 'maybe'"):
        parse_values(spec, [("flag", "maybe")])
    with pytest.raises(BundleParameterError, match="'bands' expects list, got"):
        parse_values(spec, [("bands", "3")])
    grid = parse_grid(spec, ["n=1,2", "bands=[1,2],[3]", 'tag="a,b",c'])
    assert grid == {"n": [1, 2], "bands": [[1, 2], [3]], "tag": ["a,b", "c"]}
    assert split_values("1, 2,,3") == ["1", " 2", "3"]
    with pytest.raises(BundleParameterError, match="--grid takes NAME=V1,V2"):
        parse_grid(spec, ["n"])
    with pytest.raises(BundleParameterError, match="unknown parameter 'm'"):
        parse_grid(spec, ["m=1"])


def test_cli_run_prints_records_and_fails_in_one_line(shared_bundle, tmp_path):
    labkit = str(BIN / "labkit")
    out = tmp_path / "run"
    done = subprocess.run(
        [labkit, "run", str(shared_bundle), "-p", "scale", "5", "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"total = {expected_total(5)!r}" in done.stdout
    assert json.loads((out / "result.json").read_text())["records"]["total"] == expected_total(5)

    done = subprocess.run(
        [labkit, "run", str(shared_bundle), "-p", "scale", "five"], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "labkit: parameter 'scale' expects int, got 'five'"

    failed = tmp_path / "failed"
    done = subprocess.run(
        [labkit, "run", str(shared_bundle), "-p", "label", "boom", "--out", str(failed)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "labkit: the run failed: cell" in done.stderr and "ValueError: boom" in done.stderr
    entry = json.loads((failed / "result.json").read_text())
    assert entry["status"] == "failed" and "ValueError: boom" in entry["error"]
    assert (failed / "notebook.ipynb").is_file(), "the executed notebook shows the traceback"


def test_missing_source_folder_or_bundle_is_named(bundle, tmp_path):
    with pytest.raises(BundleError, match="is not a labkit bundle: notebook.ipynb is missing"):
        load_bundle(tmp_path)
    shutil.rmtree(load_bundle(bundle).working_dir)
    with pytest.raises(BundleError, match="the source folder .*project of bundle analysis is gone"):
        run(bundle, progress=False)


def test_a_kernel_that_fails_to_start_is_started_again_not_the_notebooks_error(
    shared_bundle, tmp_path, monkeypatch
):
    """The first kernel dies before answering (as one whose ports were taken does)."""
    from labkit.runs.execute import execute_task, make_task

    marker = tmp_path / "first-start"
    launcher = (
        "import os, sys\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    sys.exit(1)\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', *sys.argv[1:]])\n"
    )
    spec = tmp_path / "jupyter" / "kernels" / "flaky"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", launcher, "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    task = make_task(load_bundle(shared_bundle), {"scale": 3})
    task["kernel"] = "flaky"
    outcome = execute_task(task)
    assert marker.exists()
    assert (outcome["status"], outcome["error"]) == ("ok", None)
    assert outcome["kernel_starts"] == 2
    assert outcome["records"]["total"] == expected_total(3)
