"""The Binder (repo2docker) configuration.

A real Binder build needs Docker and the network, so it is checked in two parts: statically
(files, pins in step with pyproject.toml, scripts that install and check labkit), and by
replaying postBuild's install in a fresh virtual environment: the wheel ``pip install .``
would install, installed with ``--no-deps`` (dependencies come from this environment), must
carry the templates and the lab and server extensions, so postBuild's own checks pass.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment() -> dict:
    return yaml.safe_load((BINDER / "environment.yml").read_text())


def _pip_lines() -> list[str]:
    for entry in _environment()["dependencies"]:
        if isinstance(entry, dict) and "pip" in entry:
            return entry["pip"]
    raise AssertionError("environment.yml has no pip section")


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        if not line.startswith("-"):
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def test_binder_files_exist_and_scripts_are_executable():
    for name in ("environment.yml", "postBuild", "start"):
        assert (BINDER / name).is_file(), name
    for name in ("postBuild", "start"):
        path = BINDER / name
        assert os.access(path, os.X_OK), f"{name} must be executable"
        assert path.read_text().startswith("#!/bin/bash")
        subprocess.run(["bash", "-n", str(path)], check=True)  # parses as bash
    assert (ROOT / "notebooks").is_dir()


def test_environment_pins_cpu_torch_and_matches_pyproject():
    pip = _pip_lines()
    assert f"--extra-index-url {CPU_INDEX}" in pip
    pinned = _by_name(pip)
    assert str(pinned["torch"].specifier) == "==2.13.0"
    for line in _pyproject()["project"]["dependencies"]:
        wanted = Requirement(line)
        got = pinned.get(wanted.name.lower())
        assert got is not None, f"{wanted.name} is a dependency but not in binder/environment.yml"
        assert got.specifier == wanted.specifier, f"{wanted.name}: {got} vs pyproject {wanted}"
        assert got.extras == wanted.extras, f"{wanted.name} extras differ"
    # the extension is built against the build-system's JupyterLab: Binder must run that one
    build = _by_name(_pyproject()["build-system"]["requires"])
    assert pinned["jupyterlab"].specifier == build["jupyterlab"].specifier
    extra = set(pinned) - {
        Requirement(d).name.lower() for d in _pyproject()["project"]["dependencies"]
    }
    assert extra <= {"jupyterlab", "ipykernel"}, f"unexplained packages: {extra}"


def test_environment_python_and_node():
    conda = [d for d in _environment()["dependencies"] if isinstance(d, str)]
    python = next(d for d in conda if d.startswith("python"))
    assert python == "python=3.11"
    assert _pyproject()["project"]["requires-python"] == ">=3.11"
    node = next(d for d in conda if d.startswith("nodejs"))
    assert re.fullmatch(r"nodejs>=(\d+)", node) and int(node.split(">=")[1]) >= 20
    assert "pip" in conda


def test_post_build_installs_labkit_and_checks_both_extensions():
    commands = [
        shlex.split(line)
        for line in (BINDER / "postBuild").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ["set", "-euo", "pipefail"] in commands
    installs = [c for c in commands if c[:4] == ["python", "-m", "pip", "install"]]
    assert len(installs) == 1 and installs[0][-1] == "." and "--no-deps" in installs[0]
    text = (BINDER / "postBuild").read_text()
    assert "jupyter labextension list" in text and "jupyter server extension list" in text


def test_start_defaults_local_clusters_to_dask_and_runs_the_session():
    text = (BINDER / "start").read_text()
    assert 'export LABKIT_BACKEND="${LABKIT_BACKEND:-dask}"' in text
    assert text.rstrip().endswith('exec "$@"')
    result = subprocess.run(
        [
            str(BINDER / "start"),
            sys.executable,
            "-c",
            "import os; print(os.environ['LABKIT_BACKEND'])",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "LABKIT_BACKEND"},
        check=True,
    )
    assert result.stdout.strip() == "dask"


def test_readme_badge_opens_the_notebooks_folder():
    readme = (ROOT / "README.md").read_text()
    badge = re.search(r"\(https://mybinder\.org/v2/gh/[^)\s]+\)", readme)
    assert badge and badge.group(0).endswith("?urlpath=lab/tree/notebooks)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel postBuild's ``pip install .`` builds (the lab extension as already built)."""
    built = ROOT / "labkit" / "labextension" / "package.json"
    assert built.is_file(), "the lab extension is not built in this checkout: run make test"
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        env={**os.environ, "SKIP_JUPYTER_BUILDER": "1"},
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("labkit-*.whl")
    return found


def test_post_build_install_replayed_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # dependencies: this environment's packages, after the venv's own (labkit from the wheel)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "zz-test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # the jupyter commands postBuild calls, run by the fresh venv's interpreter
    for name in ("jupyter", "jupyter-labextension", "jupyter-server"):
        script = (Path(sys.executable).parent / name).read_text().split("\n", 1)[1]
        shim = venv / "bin" / name
        shim.write_text(f"#!{python}\n{script}")
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JUPYTER_PATH", None)

    where = subprocess.run(
        [
            str(python),
            "-c",
            "import labkit.templates as t; print(t.__file__); print(t.templates_dir())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the checkout, which would shadow the installed package
        check=True,
    ).stdout.split()
    assert all(line.startswith(site) for line in where), where  # the wheel, not the checkout

    listed = subprocess.run(
        [str(venv / "bin" / "labkit"), "new", "--list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert {"spectral-training", "similarity-study", "batch-sweep"} <= {
        line.split()[0] for line in listed.splitlines()
    }
    # postBuild's own checks, against the fresh environment
    script = "\n".join(
        line
        for line in (BINDER / "postBuild").read_text().splitlines()
        if line.startswith("jupyter ")
    )
    assert script.count("\n") == 1
    checks = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert checks.returncode == 0, checks.stdout + checks.stderr
    assert (venv / "share/jupyter/labextensions/labkit/package.json").is_file()
    assert (venv / "etc/jupyter/jupyter_server_config.d/labkit.json").is_file()
