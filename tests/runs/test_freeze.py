"""labkit freeze: the bundle layout (notebook, manifest, requirements.lock) and its manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import papermill
import pytest
from IPython.core.interactiveshell import InteractiveShell

import labkit
from labkit.errors import BundleError, BundleWarning
from labkit.runs import current_notebook_path, freeze, list_runs, read_records
from labkit.runs.bundle import sha256_file
from labkit.runs.freeze import is_plain_assignments

from .conftest import CELLS, KERNELSPEC, write_notebook

LABKIT = str(Path(sys.executable).parent / "labkit")


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_bundle_has_cleared_notebook_tagged_parameters_manifest_and_lock(source, tmp_path):
    executed = nbformat.read(source, as_version=4)
    executed.cells[0].outputs = [nbformat.v4.new_output("stream", text="noise\n")]
    executed.cells[0].execution_count = 7
    nbformat.write(executed, source)

    path = freeze(source, name="analysis", out=tmp_path / "bundles")

    assert path == (tmp_path / "bundles" / "analysis").resolve()
    nb = nbformat.read(path / "notebook.ipynb", as_version=4)
    assert all(not c.outputs and c.execution_count is None for c in nb.cells)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [1], "the first cell of plain assignments is tagged, not the import cell"

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["source"] == {"path": str(source), "sha256": sha256_file(source)}
    assert manifest["working_dir"] == str(source.parent)
    fields = ("name", "type", "default", "inferred_type_name")
    assert [tuple(p[f] for f in fields) for p in manifest["parameters"]] == [
        ("scale", "int", "2", "None"),
        ("label", "str", '"a"', "None"),
        ("hold_scale", "int", "-1", "None"),
        ("hold_file", "str", '""', "None"),
    ]
    assert manifest["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert manifest["platform"]["system"] and manifest["created"]
    data = source.parent / "data" / "values.txt"
    assert manifest["data_files"] == [
        {"path": "data/values.txt", "resolved": str(data), "sha256": sha256_file(data), "bytes": 8}
    ]
    assert manifest["cluster"] is None
    assert manifest["git"] == {"commit": None, "dirty": None, "root": None}

    lock = (path / "requirements.lock").read_text().splitlines()
    assert f"papermill=={metadata.version('papermill')}" in lock
    assert f"nbformat=={metadata.version('nbformat')}" in lock
    assert list_runs(tmp_path)[0]["kind"] == "bundle"


def test_papermill_infers_declared_types_and_an_existing_tag_is_kept(tmp_path):
    cells = ["import math", 'n: int = 3\nrate = 0.5  # per second\nnames = ["a"]', "x = 1"]
    source = write_notebook(tmp_path / "typed.ipynb", cells, tags={2: ["parameters"]})
    path = freeze(source, name="typed", out=tmp_path)
    nb = nbformat.read(path / "notebook.ipynb", as_version=4)
    assert [c.metadata.get("tags", []) for c in nb.cells] == [[], [], ["parameters"]]
    manifest = json.loads((path / "manifest.json").read_text())
    assert [(p["name"], p["type"]) for p in manifest["parameters"]] == [("x", "int")]

    source = write_notebook(tmp_path / "typed2.ipynb", cells)
    manifest = json.loads(
        (freeze(source, name="typed2", out=tmp_path) / "manifest.json").read_text()
    )
    fields = ("name", "type", "inferred_type_name", "help")
    assert [tuple(p[f] for f in fields) for p in manifest["parameters"]] == [
        ("n", "int", "int", ""),
        ("rate", "float", "None", "per second"),
        ("names", "list", "None", ""),
    ]


def test_a_parameter_papermill_cannot_see_is_warned_about(tmp_path):
    cells = ["low = high = 1\nseed = 1; scale = 2.0\nlabel = 'qso'  # 'qso' or 'galaxy'"]
    source = write_notebook(tmp_path / "packed.ipynb", cells)
    missed = r"papermill does not see 'low', 'high', 'seed', 'scale' in .*packed\.ipynb"
    with pytest.warns(BundleWarning, match=missed):
        path = freeze(source, name="packed", out=tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert [p["name"] for p in manifest["parameters"]] == ["label"]


def test_notebook_without_assignments_gets_a_tagged_parameters_cell(tmp_path):
    source = write_notebook(tmp_path / "plain.ipynb", ["print('hello')", "y = compute()"])
    nb = nbformat.read(freeze(source, name="plain", out=tmp_path) / "notebook.ipynb", as_version=4)
    assert nb.cells[0].metadata["tags"] == ["parameters"]
    assert [c.source for c in nb.cells[1:]] == ["print('hello')", "y = compute()"]


@pytest.mark.parametrize(
    ("source", "plain"),
    [
        ("a = 1\nb = 'x'  # note\nc: float = -2.5", True),
        ("a = [1, 2]\nb = {'k': None}", True),
        ("a = f(1)", False),
        ("import os", False),
        ("a.b = 1", False),
        ("", False),
        ("%matplotlib inline\na = 1", False),
    ],
)
def test_plain_assignments(source, plain):
    assert is_plain_assignments(source) is plain


def test_globbed_absolute_and_missing_data_files(tmp_path):
    folder = tmp_path / "survey"
    (folder / "spectra").mkdir(parents=True)
    for name in ("a.fits", "b.fits"):
        (folder / "spectra" / name).write_bytes(name.encode())
    outside = tmp_path / "table.csv"
    outside.write_text("x\n1\n")
    cells = [
        f'files = sorted(glob.glob("spectra/*.fits"))\ntable = "{outside}"\nmissing = "gone.txt"',
        "%time print('magics are skipped, the rest is read')\nother = 'spectra/a.fits'",
    ]
    source = write_notebook(folder / "survey.ipynb", cells)
    manifest = json.loads((freeze(source, name="s", out=tmp_path) / "manifest.json").read_text())
    assert [entry["path"] for entry in manifest["data_files"]] == [
        str(outside),
        "spectra/a.fits",
        "spectra/b.fits",
    ]


def test_git_commit_and_dirty_flag(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    source = write_notebook(repo / "nb.ipynb", ["a = 1"])
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", "nb.ipynb")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "nb")
    clean = json.loads((freeze(source, name="clean", out=tmp_path) / "manifest.json").read_text())
    assert clean["git"]["commit"] == _git(repo, "rev-parse", "HEAD")
    assert clean["git"]["dirty"] is False and clean["git"]["root"] == str(repo)
    write_notebook(source, ["a = 2"])
    dirty = json.loads((freeze(source, name="dirty", out=tmp_path) / "manifest.json").read_text())
    assert dirty["git"]["dirty"] is True


def test_active_cluster_is_recorded(source, tmp_path):
    labkit.connect(backend="dask", workers=1)
    manifest = json.loads((freeze(source, name="c", out=tmp_path) / "manifest.json").read_text())
    assert manifest["cluster"]["backend"] == "dask"
    assert manifest["cluster"]["workers"] == 1
    assert manifest["cluster"]["address"] == labkit.current().address


def test_bad_inputs_name_the_thing_at_fault(source, tmp_path):
    with pytest.raises(BundleError, match="no notebook at .*missing.ipynb"):
        freeze(tmp_path / "missing.ipynb", out=tmp_path)
    freeze(source, name="once", out=tmp_path)
    with pytest.raises(BundleError, match="a bundle already exists at .*once"):
        freeze(source, name="once", out=tmp_path)
    with pytest.raises(BundleError, match="bundle name '../up'"):
        freeze(source, name="../up", out=tmp_path)


def test_default_name_and_runs_dir(source, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUNS_DIR", str(tmp_path / "all-runs"))
    path = freeze(source)
    assert path.parent == (tmp_path / "all-runs").resolve()
    assert path.name.startswith("analysis-")
    assert [entry["path"] for entry in list_runs()] == [str(path)]


def test_cli_freeze_prints_the_bundle_and_fails_in_one_line(source, tmp_path):
    done = subprocess.run(
        [LABKIT, "freeze", str(source), "--name", "cli", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((tmp_path / "cli").resolve())
    done = subprocess.run(
        [LABKIT, "freeze", str(tmp_path / "nope.ipynb")], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.startswith("labkit: no notebook at") and len(done.stderr.splitlines()) == 1


def test_kernel_finds_its_notebook_from_the_jupyter_session_name(source, tmp_path, monkeypatch):
    """A kernel Jupyter starts gets JPY_SESSION_NAME; %labkit freeze uses it, and the
    frozen copy no longer freezes itself when it runs."""
    cells = [*CELLS[:3], f"%load_ext labkit\n%labkit freeze --name from-kernel --out {tmp_path}"]
    write_notebook(source, cells)
    monkeypatch.setenv("JPY_SESSION_NAME", str(source))
    papermill.execute_notebook(str(source), None, cwd=str(source.parent), progress_bar=False)
    path = tmp_path / "from-kernel"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["source"]["path"] == str(source)
    nb = nbformat.read(path / "notebook.ipynb", as_version=4)
    assert nb.cells[-1].source.splitlines()[1].startswith("# %labkit freeze")
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(path / "notebook.ipynb"), str(out), cwd=str(source.parent), progress_bar=False
    )
    assert read_records(out) == {}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["from-kernel", "project"]


def test_freeze_magic_without_a_session_name_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "labkit")
    with pytest.raises(BundleError, match="cannot tell which notebook this kernel runs"):
        current_notebook_path({})
    result = shell.run_cell("%labkit freeze")
    assert "--notebook PATH" in capsys.readouterr().err
    assert result.error_in_exec is not None
    notebook = write_notebook(tmp_path / "n.ipynb", ["a = 1"])
    assert shell.run_cell(f"%labkit freeze --notebook {notebook} --name m --out {tmp_path}").success
    assert (tmp_path / "m" / "manifest.json").is_file()
    capsys.readouterr()
    assert shell.run_cell(f"%labkit runs {tmp_path}").success
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["kind", "name", "status", "created", "details", "path"]
    assert table[1].split()[:3] == ["bundle", "m", "frozen"]
    assert table[1].endswith(str(tmp_path / "m"))


def test_kernelspec_is_kept(source, tmp_path):
    nb = nbformat.read(freeze(source, name="k", out=tmp_path) / "notebook.ipynb", as_version=4)
    assert nb.metadata["kernelspec"] == KERNELSPEC
