"""``labkit freeze``: turn a notebook into a parameterised bundle with its provenance.

The bundle (notebook.ipynb, manifest.json, requirements.lock) is what a later run needs to
reproduce this one: the notebook with outputs cleared and one ``parameters`` cell, the
parameters papermill infers from it, the source folder it runs in, the hashes of the data
files it names, and the exact packages.
"""

from __future__ import annotations

import ast
import glob
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import BundleError, BundleWarning
from labkit.runs.bundle import (
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    NOTEBOOK,
    now_iso,
    sha256_file,
    write_json,
)
from labkit.runs.parameters import parameter_spec

if TYPE_CHECKING:
    import nbformat

PARAMETERS_TAG = "parameters"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_FREEZE_MAGIC = re.compile(r"^(\s*)(%labkit\s+freeze\b.*)$", re.MULTILINE)
_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_GLOB_MATCHES = 10_000
_SHOW_HASHING_FROM = 256 * 2**20  # bytes of data files before hashing shows a progress bar


def freeze(
    notebook: str | os.PathLike,
    name: str | None = None,
    out: str | os.PathLike | None = None,
) -> Path:
    """Write a bundle of ``notebook`` to ``OUT/NAME`` and return its path.

    ``out`` defaults to ``$LABKIT_RUNS_DIR`` or the current folder; ``name`` to the
    notebook's stem and a time stamp. The notebook is read as saved on disk.
    """
    import nbformat

    source = Path(notebook).expanduser().resolve()
    if source.suffix != ".ipynb" or not source.is_file():
        raise BundleError(
            f"no notebook at {source} (expected an existing .ipynb file)", path=str(source)
        )
    if name is None:
        name = f"{source.stem}-{now_iso()[:19].replace(':', '').replace('T', '-')}"
    if not _NAME.fullmatch(name):
        raise BundleError(
            f"bundle name {name!r} must be letters, digits, '.', '_' or '-'", path=name
        )
    root = Path(out if out is not None else os.environ.get("LABKIT_RUNS_DIR") or ".")
    target = root.expanduser().resolve() / name
    if target.exists():
        raise BundleError(
            f"a bundle already exists at {target}; choose another --name or remove it",
            path=str(target),
        )
    try:
        original = nbformat.read(source, as_version=4)
    except Exception as exc:
        raise BundleError(f"cannot read the notebook {source}: {exc}", path=str(source)) from exc

    frozen = prepare_notebook(original)
    partial = target.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        nbformat.write(frozen, partial / NOTEBOOK)
        manifest = build_manifest(name, source, frozen, partial / NOTEBOOK)
        write_json(partial / MANIFEST, manifest)
        (partial / LOCK).write_text(requirements_lock())
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


# -- the notebook ----------------------------------------------------------------------------
def prepare_notebook(original: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with outputs cleared, one tagged ``parameters`` cell, and no self-freezing."""
    import nbformat

    nb = nbformat.from_dict(original)
    nb.cells = [cell for cell in nb.cells if "injected-parameters" not in _tags(cell)]
    for key in ("papermill", "widgets"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            # A frozen run must not freeze itself again.
            cell.source = _FREEZE_MAGIC.sub(
                r"\1# \2  (labkit: not re-run in a frozen run)", cell.source
            )
    _ensure_parameters_cell(nb)
    return nb


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _ensure_parameters_cell(nb: nbformat.NotebookNode) -> None:
    import nbformat

    tagged = [i for i, cell in enumerate(nb.cells) if PARAMETERS_TAG in _tags(cell)]
    for extra in tagged[1:]:  # papermill uses the first; a second tag would only mislead
        nb.cells[extra].metadata["tags"].remove(PARAMETERS_TAG)
    if tagged:
        return
    for cell in nb.cells:
        if cell.cell_type == "code" and is_plain_assignments(cell.source):
            cell.metadata["tags"] = [*_tags(cell), PARAMETERS_TAG]
            return
    placeholder = nbformat.v4.new_code_cell(
        "# parameters: none were found when this notebook was frozen",
        metadata={"tags": [PARAMETERS_TAG]},
    )
    nb.cells.insert(0, placeholder)


def is_plain_assignments(source: str) -> bool:
    """True when every statement assigns a literal to a name (``x = 1``, ``y: str = "a"``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    if not tree.body:
        return False
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            return False
        if not all(isinstance(target, ast.Name) for target in targets):
            return False
        try:
            ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return False
    return True


def assigned_names(source: str) -> list[str]:
    """Names a cell assigns at its top level, in order (none if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for statement in tree.body:
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        else:
            continue
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def _checked_parameters(
    frozen: nbformat.NotebookNode, inferred: dict[str, Any], source: Path
) -> list[dict[str, Any]]:
    """papermill's parameters, with a warning for names the cell assigns that it missed.

    papermill reads the parameters cell line by line and skips, with only a log line, what
    it cannot parse (``a = b = 1``, ``a = 1; b = 2``); a run could then not set those names.
    """
    cell = next(c for c in frozen.cells if PARAMETERS_TAG in _tags(c))
    missed = [name for name in assigned_names(cell.source) if name not in inferred]
    if missed:
        warnings.warn(
            f"papermill does not see {', '.join(map(repr, missed))} in the parameters cell of "
            f"{source}, so runs cannot set {'it' if len(missed) == 1 else 'them'}; give each "
            "parameter a line of its own: `name = value  # comment`",
            BundleWarning,
            stacklevel=3,
        )
    return parameter_spec(inferred)


# -- the manifest ----------------------------------------------------------------------------
def build_manifest(
    name: str, source: Path, frozen: nbformat.NotebookNode, frozen_path: Path
) -> dict[str, Any]:
    from papermill import inspect_notebook

    folder = source.parent
    kernelspec = frozen.metadata.get("kernelspec", {})
    return {
        "format": FORMAT_VERSION,
        "kind": "bundle",
        "name": name,
        "created": now_iso(),
        "source": {"path": str(source), "sha256": sha256_file(source)},
        "working_dir": str(folder),
        "kernel": kernelspec.get("name") or "python3",
        "parameters": _checked_parameters(frozen, inspect_notebook(str(frozen_path)), source),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "hostname": socket.gethostname(),
        },
        "git": git_state(folder),
        "data_files": data_files(frozen, folder, exclude={source}),
        "cluster": cluster_state(),
    }


def git_state(folder: Path) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding ``folder`` (all None outside one)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "root": None}
    status = git("status", "--porcelain")
    root = git("rev-parse", "--show-toplevel")
    return {
        "commit": commit.strip(),
        "dirty": None if status is None else bool(status.strip()),
        "root": root.strip() if root else None,
    }


def data_files(nb: nbformat.NotebookNode, folder: Path, exclude: set[Path]) -> list[dict]:
    """Each existing file a string literal in a code cell names, relative to ``folder``.

    Glob patterns (``"spectra/*.fits"``) count for every file they match.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    transformer = TransformerManager()
    found: dict[Path, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(transformer.transform_cell(cell.source))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for named, path in _files_named(node.value, folder):
                    if path not in exclude:
                        found.setdefault(path, named)
    from tqdm.auto import tqdm

    files = sorted(found.items(), key=lambda item: item[1])
    sizes = {path: path.stat().st_size for path, _ in files}
    total = sum(sizes.values())
    entries = []
    with tqdm(
        total=total, desc="hashing data files", unit="B", unit_scale=True,
        disable=total < _SHOW_HASHING_FROM,
    ) as bar:  # fmt: skip
        for path, named in files:
            digest = sha256_file(path, bar.update)
            entries.append(
                {"path": named, "resolved": str(path), "sha256": digest, "bytes": sizes[path]}
            )
    return entries


def _files_named(text: str, folder: Path) -> list[tuple[str, Path]]:
    if not text.strip() or len(text) > 4096 or any(c in text for c in "\n\r\0"):
        return []
    expanded = os.path.expanduser(text)
    if _GLOB_CHARS.search(expanded):
        pattern = expanded if os.path.isabs(expanded) else str(folder / expanded)
        matches = []
        for match in glob.iglob(pattern, recursive=True):
            if len(matches) >= _MAX_GLOB_MATCHES:
                break
            path = Path(match)
            if path.is_file():
                matches.append((_relative(path.resolve(), folder), path.resolve()))
        return matches
    path = Path(expanded) if os.path.isabs(expanded) else folder / expanded
    try:
        if path.is_file():
            return [(text, path.resolve())]
    except OSError:  # names too long for the filesystem, and the like
        return []
    return []


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def cluster_state() -> dict[str, Any] | None:
    """Backend and size of the active cluster, or None when nothing is attached."""
    from labkit.clusters import active_or_none

    cluster = active_or_none()
    if cluster is None:
        return None
    state: dict[str, Any] = {"backend": cluster.backend, "address": cluster.address}
    try:
        state.update(cluster.resources())
    except Exception as exc:  # a cluster that stopped answering still names itself
        state["error"] = f"{type(exc).__name__}: {exc}"
    return state


def requirements_lock() -> str:
    """``name==version`` for every installed distribution, from importlib.metadata."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"]
        if dist_name:
            pins.setdefault(re.sub(r"[-_.]+", "-", dist_name).lower(), dist.version)
    header = (
        f"# exact versions at freeze time: python {platform.python_version()} "
        f"on {platform.platform()}\n"
    )
    return header + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


# -- the kernel's own notebook ---------------------------------------------------------------
def current_notebook_path(user_ns: dict[str, Any] | None = None) -> Path:
    """The notebook this kernel runs, from what Jupyter (or VS Code) tells the kernel."""
    user_ns = user_ns or {}
    candidates = [
        os.environ.get("JPY_SESSION_NAME"),
        user_ns.get("__session__"),
        user_ns.get("__vsc_ipynb_file__"),
    ]
    for candidate in filter(None, candidates):
        path = Path(str(candidate)).expanduser()
        for option in (path, Path.cwd() / path.name):
            if option.suffix == ".ipynb" and option.is_file():
                return option.resolve()
    named = next(filter(None, candidates), None)
    where = f" (Jupyter named {named}, which is not a notebook file here)" if named else ""
    raise BundleError(
        "cannot tell which notebook this kernel runs" + where + "; "
        "name it: %labkit freeze --notebook PATH, or labkit freeze PATH"
    )
