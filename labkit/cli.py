"""The ``labkit`` command: a thin layer over the Python API."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps

import click

from labkit.errors import LabkitError


def _one_line_errors(command: Callable) -> Callable:
    """User mistakes end the command with one line on stderr and exit status 1."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LabkitError as exc:
            click.echo(f"labkit: {exc}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labkit")
def main() -> None:
    """labkit: attach notebooks to Ray or Dask clusters, and run the research workbench."""


@main.command()
@click.option(
    "--backend",
    type=click.Choice(["ray", "dask"]),
    default=None,
    help="Cluster backend (default: $LABKIT_BACKEND or ray).",
)
@click.option(
    "--spectra",
    "n_spectra",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Number of items in the survey-sized workload.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="labkit-demo",
    show_default=True,
    help="Folder for the demo's outputs.",
)
@_one_line_errors
def demo(backend: str | None, n_spectra: int, out: str) -> None:
    """Run the main job end to end on a local cluster and print a summary."""
    from labkit.demo import run_demo

    run_demo(backend=backend, n_spectra=n_spectra, out=out)


if __name__ == "__main__":  # pragma: no cover
    main()
