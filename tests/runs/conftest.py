"""A tiny analysis notebook beside a data file, and its frozen bundle.

The notebook reads ``data/values.txt`` by a relative path, records numbers, a string, a
numpy array, its working directory, and its kernel's parent process (the worker that ran
it). ``hold_scale``/``hold_file`` let a test catch one run in flight: the first attempt of
that run writes "WORKER_PID KERNEL_PID" to ``hold_file`` and stays busy until its worker dies.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from labkit.runs import freeze

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

CELLS = [
    "import os\nimport time\n\nimport numpy as np\n\nimport labkit",
    'scale = 2\nlabel = "a"\nhold_scale = -1\nhold_file = ""',
    'with open("data/values.txt") as handle:\n'
    "    values = [float(x) for x in handle.read().split()]",
    "if scale == hold_scale and not os.path.exists(hold_file):\n"
    '    with open(hold_file + ".tmp", "w") as handle:\n'
    '        handle.write(f"{os.getppid()} {os.getpid()}")\n'
    '    os.replace(hold_file + ".tmp", hold_file)\n'
    "    deadline = time.monotonic() + 60  # busy until the test kills this run's worker\n"
    "    while time.monotonic() < deadline:\n"
    "        time.sleep(0.05)",
    'if label == "boom":\n    raise ValueError("boom")\n'
    'labkit.record("total", sum(values) * scale)\n'
    'labkit.record("label", label)\n'
    'labkit.record("series", np.arange(3) * scale)\n'
    'labkit.record("cwd", os.getcwd())\n'
    'if hold_file:\n    labkit.record("worker_pid", os.getppid())',
]


def write_notebook(path: Path, cells: list[str], tags: dict[int, list[str]] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.cells = [
        nbformat.v4.new_code_cell(source, metadata={"tags": (tags or {}).get(i, [])})
        for i, source in enumerate(cells)
    ]
    nbformat.write(nb, path)
    return path


def expected_total(scale: int) -> float:
    return (1 + 2 + 3.5) * scale


@pytest.fixture
def source(tmp_path) -> Path:
    """A source folder: ``analysis.ipynb`` and ``data/values.txt``."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "values.txt").write_text("1 2 3.5\n")
    return write_notebook(folder / "analysis.ipynb", CELLS)


@pytest.fixture
def bundle(source, tmp_path) -> Path:
    return freeze(source, name="analysis", out=tmp_path / "bundles")


@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory) -> Path:
    """One bundle for a module's tests that only read it."""
    folder = tmp_path_factory.mktemp("shared") / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "values.txt").write_text("1 2 3.5\n")
    write_notebook(folder / "analysis.ipynb", CELLS)
    return freeze(folder / "analysis.ipynb", name="analysis", out=folder.parent / "bundles")
