"""``labkit new``: notebooks from templates, through the real command."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from labkit.errors import TemplateError
from labkit.templates import list_templates, new_notebook
from tests.conftest import BIN

LABKIT = str(BIN / "labkit")
NAMES = {"spectral-training", "similarity-study", "batch-sweep"}


def labkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LABKIT, *args], capture_output=True, text=True, timeout=60)


def test_list_shows_every_template_with_its_description():
    result = labkit("new", "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert {line.split()[0] for line in lines} == {t.name for t in list_templates()} >= NAMES
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # name and description


def test_new_writes_a_clean_notebook_with_a_parameters_cell(tmp_path):
    target = tmp_path / "study" / "sweep.ipynb"
    result = labkit("new", "batch-sweep", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(target)
    notebook = nbformat.read(target, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["labkit"] == {"created_from_template": "batch-sweep"}
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "latent_dim" in tagged[0].source


def test_folder_path_and_missing_suffix(tmp_path):
    assert new_notebook("similarity-study", tmp_path) == tmp_path / "similarity-study.ipynb"
    assert new_notebook("spectral-training", tmp_path / "run1") == tmp_path / "run1.ipynb"
    assert (tmp_path / "run1.ipynb").is_file()


def test_refuses_to_overwrite(tmp_path):
    target = tmp_path / "mine.ipynb"
    target.write_text("my own work")
    result = labkit("new", "spectral-training", str(target))
    assert result.returncode == 1
    assert "already exists" in result.stderr and str(target) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "my own work"


def test_unknown_template_lists_the_known_ones(tmp_path):
    result = labkit("new", "nonsense", str(tmp_path / "x.ipynb"))
    assert result.returncode == 1
    assert "nonsense" in result.stderr
    assert all(name in result.stderr for name in NAMES)
    assert not (tmp_path / "x.ipynb").exists()
    with pytest.raises(TemplateError) as caught:
        new_notebook("nonsense", tmp_path)
    assert caught.value.name == "nonsense" and set(caught.value.known) >= NAMES


def test_template_and_path_are_required_without_list():
    result = labkit("new", "batch-sweep")
    assert result.returncode == 2 and "--list" in result.stderr
