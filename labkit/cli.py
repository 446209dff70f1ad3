"""The ``labkit`` command: a thin layer over the Python API."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps

import click

from labkit.clusters.backends import known_backends
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
    type=click.Choice(known_backends()),
    default=None,
    help="Cluster backend (default: $LABKIT_BACKEND or ray).",
)
@click.option(
    "--spectra",
    "n_spectra",
    type=click.IntRange(min=100),
    default=5000,
    show_default=True,
    help="Size of the mock survey.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 30)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="labkit-demo",
    show_default=True,
    help="Folder for the demo's outputs.",
)
@_one_line_errors
def demo(backend: str | None, n_spectra: int, epochs: int | None, out: str) -> None:
    """Run the main job end to end on a local cluster and print a summary.

    Mock survey, preprocessing, VAE training, milvus-lite index, neighbour and anomaly
    queries, freeze and a 2-point batch; outputs and summary.json go to OUT.
    """
    from labkit.demo import run_demo

    options = {} if epochs is None else {"epochs": epochs}
    run_demo(backend=backend, n_spectra=n_spectra, out=out, **options)


@main.command("mock")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--format",
    "layout",
    type=click.Choice(["desi", "sdss", "store"]),
    default="desi",
    show_default=True,
    help="DESI coadds (500 spectra each), one SDSS spec-lite file per spectrum, or a "
    "rest-frame spectra store (generated chunk by chunk on the active cluster).",
)
@click.option("--anomaly-fraction", type=click.FloatRange(0, 1), default=0.01, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace what an earlier `labkit mock` wrote.")
@_one_line_errors
def mock_command(
    out_dir: str, n: int, layout: str, anomaly_fraction: float, seed: int, overwrite: bool
) -> None:
    """Write a mock survey with ground truth (label, is_anomaly)."""
    if layout == "store":
        from labkit.spectra import mock_source, preprocess

        store = preprocess(mock_source(n, anomaly_fraction, seed), out=out_dir, overwrite=overwrite)
        click.echo(f"wrote {len(store)} spectra in {store.n_chunks} chunks to the store {out_dir}")
        return
    from labkit.spectra import mock_survey, write

    spectra = mock_survey(n, anomaly_fraction, seed, instrument=layout, progress=True)
    files = write(spectra, out_dir, format=layout, overwrite=overwrite)
    anomalies = int(spectra.meta["is_anomaly"].sum())
    click.echo(
        f"wrote {n} spectra ({anomalies} anomalies) in {len(files)} {layout} file(s) to {out_dir}"
    )


@main.command("preprocess")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The store to write.")
@click.option("--redshifts", multiple=True, help="Redrock/zbest file(s) or glob (repeatable).")
@click.option(
    "--grid",
    nargs=3,
    type=float,
    metavar="START STOP DLOG",
    help="Rest-frame grid: Å from START to STOP, DLOG dex per pixel (default 900 9800 5.5e-4).",
)
@click.option(
    "--on",
    default=None,
    help="Cluster to run on: local, ray or dask (a local cluster), an address or a registered "
    "name (default: this process).",
)
@click.option("--overwrite", is_flag=True, help="Replace a store written from other inputs.")
@_one_line_errors
def preprocess_command(
    inputs: tuple[str, ...],
    out: str,
    redshifts: tuple[str, ...],
    grid: tuple[float, float, float] | None,
    on: str | None,
    overwrite: bool,
) -> None:
    """Preprocess DESI/SDSS files (paths, folders or globs) into a rest-frame store at OUT.

    Workers read their own files and write their own chunks; rerunning the same command
    completes an interrupted store.
    """
    from labkit.spectra import preprocess, rest_grid

    store = preprocess(
        list(inputs),
        grid=rest_grid(*grid) if grid else None,
        cluster=on if on is not None else False,  # a cluster this connects is closed after
        out=out,
        redshifts=list(redshifts) or None,
        overwrite=overwrite,
    )
    click.echo(
        f"{out}: {len(store)} spectra x {store.n_pixels} pixels in {store.n_chunks} chunks, "
        f"{store.nbytes_on_disk() / len(store) / 1e3:.1f} kB per spectrum on disk"
    )


@main.command("freeze")
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option("--name", help="Bundle folder name (default: the notebook's stem and a time stamp).")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder that receives the bundle (default: $LABKIT_RUNS_DIR or here).",
)
@_one_line_errors
def freeze_command(notebook: str, name: str | None, out: str | None) -> None:
    """Freeze NOTEBOOK into a papermill bundle.

    The bundle records the parameters, data file hashes, git state and exact packages;
    prints its path.
    """
    from labkit.runs import freeze

    click.echo(freeze(notebook, name=name, out=out))


@main.command("run")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option(
    "-p",
    "--parameter",
    "pairs",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="A parameter value, checked against the bundle's manifest (repeatable).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run folder (default: BUNDLE/runs/STAMP)."
)
@_one_line_errors
def run_command(bundle: str, pairs: tuple[tuple[str, str], ...], out: str | None) -> None:
    """Execute BUNDLE once with papermill.

    Parameters are checked against the manifest first; prints the run folder and records.
    """
    from labkit.errors import RunFailedError
    from labkit.runs import load_bundle, run
    from labkit.runs.parameters import parse_values

    loaded = load_bundle(bundle)
    result = run(loaded, parse_values(loaded.parameters, pairs), out=out)
    click.echo(result.path)
    for name, value in result.records.items():
        click.echo(f"  {name} = {value!r}")
    if not result.ok:
        raise RunFailedError(f"the run failed: {result.error} (see {result.notebook})")


@main.command("batch")
@click.argument("bundle", required=False, type=click.Path(file_okay=False))
@click.option(
    "--grid",
    "grid",
    multiple=True,
    metavar="NAME=V1,V2",
    help="Values of one parameter; runs cover every combination (repeatable).",
)
@click.option(
    "--on",
    default=None,
    metavar="local|ray|dask|ADDRESS|slurm[:PROFILE]",
    help="Cluster to run on: a local one of a backend, an address or a registered name; "
    "slurm: one SLURM job array (a profile's partition, cores, memory, walltime).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Resubmissions of a run lost with its worker (on SLURM: or out of time).",
)
@click.option(
    "--out", type=click.Path(file_okay=False), help="Batch folder (default: BUNDLE/batches/STAMP)."
)
@click.option(
    "--status",
    "status_dir",
    metavar="BATCH_DIR",
    type=click.Path(file_okay=False, exists=True),
    help="Where each run of a SLURM batch stands (from its folder and squeue).",
)
@click.option(
    "--resume",
    "resume_dir",
    metavar="BATCH_DIR",
    type=click.Path(file_okay=False, exists=True),
    help="Submit a SLURM batch's lost runs again and wait for all of its runs.",
)
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    default=None,
    help="SLURM: array tasks that share the runs, each taking the next run in turn (a "
    "fresh kernel per run) [default: as many as the partition's CPUs run at once].",
)
@click.option(
    "--signal",
    "signal_spec",
    metavar="SPEC",
    default=None,
    help="SLURM: sbatch --signal of each task, passed on to the notebook's kernel "
    "(labkit.vae.train checkpoints on SIGUSR1); 'none' for none [default: B:USR1@120].",
)
@_one_line_errors
def batch_command(
    bundle: str | None,
    grid: tuple[str, ...],
    on: str | None,
    retries: int,
    out: str | None,
    status_dir: str | None,
    resume_dir: str | None,
    tasks: int | None,
    signal_spec: str | None,
) -> None:
    """Run BUNDLE over a parameter grid on a cluster.

    One papermill run per grid point, in parallel; writes results.json and one executed
    notebook per run. Exits 1 when any run failed. A SLURM batch (--on slurm) can be
    followed later from its folder alone: --status BATCH_DIR, --resume BATCH_DIR.
    """
    from labkit.errors import ParameterError, RunFailedError
    from labkit.runs import batch, load_bundle
    from labkit.runs.parameters import parse_grid

    if status_dir or resume_dir:
        if bundle or grid or on or out or tasks or signal_spec or (status_dir and resume_dir):
            raise ParameterError("--status or --resume takes a batch folder and nothing else")
        from labkit.runs.slurm_array import batch_status, resume_batch

        if status_dir:
            click.echo("\n".join(batch_status(status_dir).lines()))
            return
        result = resume_batch(resume_dir)
    elif bundle is None:
        raise ParameterError("give a BUNDLE to run (or --status / --resume BATCH_DIR)")
    else:
        loaded = load_bundle(bundle)
        grid_values = parse_grid(loaded.parameters, grid)
        array: dict[str, object] = {} if tasks is None else {"tasks": tasks}
        if signal_spec is not None:
            array["signal"] = None if signal_spec.lower() == "none" else signal_spec
        result = batch(loaded, grid_values, on=on, retries=retries, out=out, **array)
    click.echo(result.path)
    summary = ", ".join(f"{v} {k}" for k, v in result.summary.items() if k != "duration_s" and v)
    click.echo(f"  {summary} in {result.summary['duration_s']:.1f} s")
    for failed in result.failed:
        click.echo(f"  run {failed['index']} {failed['parameters']}: {failed['error']}", err=True)
    if result.failed:
        raise RunFailedError(
            f"{len(result.failed)} of {len(result.runs)} runs did not succeed; see "
            f"{result.path / 'results.json'}"
        )


@main.group("tracking")
def tracking_group() -> None:
    """Where runs are tracked (MLflow), and sending runs kept while a server was down."""


@tracking_group.command("uri")
@_one_line_errors
def tracking_uri_command() -> None:
    """Print the tracking URI labkit logs to (LABKIT_TRACKING_URI, MLFLOW_TRACKING_URI, else
    RUNS_DIR/mlflow.db), or "off" when LABKIT_TRACKING=off."""
    from labkit.tracking import tracking_enabled, tracking_uri

    click.echo(tracking_uri() if tracking_enabled() else "off")


@tracking_group.command("sync")
@click.argument("runs_dir", required=False, type=click.Path(file_okay=False))
@click.option("--to", metavar="URI", help="Send to this server instead of the one each run names.")
@_one_line_errors
def tracking_sync_command(runs_dir: str | None, to: str | None) -> None:
    """Send the runs kept in RUNS_DIR/mlflow-unsent.db (default: $LABKIT_RUNS_DIR or here)
    while their tracking server could not be reached."""
    from labkit.tracking import sync

    result = sync(runs_dir, to=to)
    click.echo(f"sent {len(result.sent)} run(s) from {result.source}; {result.skipped} sent before")
    for old, new in result.sent.items():
        click.echo(f"  {old} -> {new}")


@main.command("verify")
@click.argument("path", metavar="RUN_OR_BATCH_DIR", type=click.Path(file_okay=False))
@click.option("--rtol", type=float, default=1e-6, show_default=True, help="Relative tolerance.")
@click.option("--atol", type=float, default=1e-12, show_default=True, help="Absolute tolerance.")
@_one_line_errors
def verify_command(path: str, rtol: float, atol: float) -> None:
    """Re-execute a run or batch and report changes.

    Reports recorded values and data file hashes that changed; exits 1 if any did.
    """
    from labkit.errors import RunFailedError
    from labkit.runs import verify

    report = verify(path, rtol=rtol, atol=atol)
    for line in report.lines():
        click.echo(f"  {line}")
    if not report.ok:
        raise RunFailedError(f"{len(report.changes)} change(s) since the run: {report.lines()[0]}")
    click.echo(
        f"reproduced: {report.runs_checked} run(s), {report.files_checked} data file(s) unchanged"
    )


@main.command("new")
@click.argument("template", required=False)
@click.argument("path", required=False, type=click.Path())
@click.option("--list", "show_list", is_flag=True, help="List the templates and exit.")
@_one_line_errors
def new_command(template: str | None, path: str | None, show_list: bool) -> None:
    """Create a notebook at PATH from TEMPLATE (a folder PATH gets TEMPLATE.ipynb).

    Templates have a tagged parameters cell and the labkit wiring; never overwrites a file.
    """
    from labkit.templates import list_templates, new_notebook

    if show_list:
        templates = list_templates()
        width = max(len(t.name) for t in templates)
        for entry in templates:
            click.echo(f"{entry.name:<{width}}  {entry.description}")
        return
    if template is None or path is None:
        raise click.UsageError("give a TEMPLATE and a PATH, or --list to see the templates")
    click.echo(new_notebook(template, path))


if __name__ == "__main__":  # pragma: no cover
    main()
