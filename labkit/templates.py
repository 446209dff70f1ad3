"""``labkit new``: start a notebook from a template that already has the labkit wiring.

A template is a notebook with a tagged ``parameters`` cell (so it freezes and batches as it
is) and a one-line description in its metadata (``metadata.labkit.template.description``).
The sources live in the repository's top-level ``templates/`` folder; wheels carry them as
``labkit/_templates`` (hatch ``force-include``), and a source checkout reads them in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labkit.errors import TemplateError

SUFFIX = ".ipynb"
_PACKAGED = Path(__file__).resolve().parent / "_templates"
_SOURCE = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class Template:
    """One template: its name (the file stem), file and description."""

    name: str
    path: Path
    description: str


def templates_dir() -> Path:
    """Where this installation keeps its templates (the wheel's copy wins over a checkout's)."""
    for folder in (_PACKAGED, _SOURCE):
        if folder.is_dir() and any(folder.glob(f"*{SUFFIX}")):
            return folder
    raise TemplateError(
        f"this labkit installation has no notebook templates (looked in {_PACKAGED} and "
        f"{_SOURCE}); reinstall labkit"
    )


def list_templates() -> list[Template]:
    """Every template, by name."""
    import nbformat

    found = []
    for path in sorted(templates_dir().glob(f"*{SUFFIX}")):
        notebook = nbformat.read(path, as_version=4)
        info = notebook.metadata.get("labkit", {}).get("template", {})
        found.append(Template(path.stem, path, str(info.get("description", ""))))
    return found


def get_template(name: str) -> Template:
    """The template called ``name``; ``TemplateError`` lists the known ones otherwise."""
    templates = {t.name: t for t in list_templates()}
    if name not in templates:
        known = sorted(templates)
        raise TemplateError(
            f"no template called {name!r}; known templates: {', '.join(known)}",
            name=name,
            known=known,
        )
    return templates[name]


def new_notebook(template: str, path: str | os.PathLike) -> Path:
    """Write a new notebook at ``path`` from ``template``; returns the file written.

    ``path`` may be a folder (the notebook is named after the template) or a file name
    (``.ipynb`` is added when missing). Missing parent folders are made; an existing file is
    never overwritten (``TemplateError``).
    """
    import nbformat

    chosen = get_template(template)
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / f"{chosen.name}{SUFFIX}"
    elif target.suffix != SUFFIX:
        target = target.with_name(target.name + SUFFIX)
    if target.exists():
        raise TemplateError(
            f"{target} already exists; choose another path (labkit new never overwrites)",
            name=template,
        )
    notebook = nbformat.read(chosen.path, as_version=4)
    labkit_meta = dict(notebook.metadata.get("labkit", {}))
    labkit_meta.pop("template", None)
    labkit_meta["created_from_template"] = chosen.name
    notebook.metadata["labkit"] = labkit_meta
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(target, "x", encoding="utf-8") as handle:  # "x": no race with another writer
            nbformat.write(notebook, handle)
    except FileExistsError:
        raise TemplateError(
            f"{target} already exists; choose another path", name=template
        ) from None
    return target
