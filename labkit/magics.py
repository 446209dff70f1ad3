"""``%labkit`` line magics: parse the line, call the Python API, display the result."""

from __future__ import annotations

import argparse
import shlex
import sys

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

import labkit
from labkit.clusters.backends import known_backends
from labkit.errors import LabkitError

USAGE = """\
usage: %labkit SUBCOMMAND [options]

  connect [ADDRESS|NAME|local] [--backend ray|dask] [--workers N] [--timeout S] [--token-file F]
          [--tls-ca-file F --tls-cert F --tls-key F]   (Dask over tls://)
          [--on slurm --jobs N --cores N --memory M --walltime T --partition P --account A
           --job-extra LINE ...]          (Dask workers or Ray nodes as SLURM jobs)
  status                 backend, address, dashboard link, workers, cpus, gpus, memory
  scale N                resize the local cluster
  disconnect             close the active cluster
  freeze [--name NAME] [--out DIR] [--notebook PATH]
                         freeze this notebook (as saved) into a papermill bundle
  runs [DIR]             table of frozen bundles, runs and batches
  train [SPECTRA] [--latent N] [--epochs N] [--backend auto|in-process|ray|dask]
                         training launcher: train a spectral VAE and watch its loss
  tune [SPECTRA] [--space "lr: 1e-3, 3e-3; latent_dim: 8, 16"] [--trials N] [--epochs N]
       [--scheduler asha|fifo]
                         Ray Tune sweep launcher: per-trial loss curves, best trials, stop
  search [INDEX] [--spectra NAME] [--model NAME] [--k N] [--collection NAME]
                         similarity/anomaly explorer over a SpectrumIndex variable or URI
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so a bad line never kills the kernel."""

    def error(self, message: str):
        raise LabkitError(f"%labkit {self.prog.split()[-1]}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%labkit", add_help=False)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    connect = commands.add_parser("connect", add_help=False)
    connect.add_argument("address", nargs="?", default=None)
    connect.add_argument("--backend", choices=known_backends())
    connect.add_argument("--workers", type=int)
    connect.add_argument("--timeout", type=float, default=labkit.clusters.session.DEFAULT_TIMEOUT)
    connect.add_argument("--token-file")
    connect.add_argument("--tls-ca-file")
    connect.add_argument("--tls-cert")
    connect.add_argument("--tls-key")
    connect.add_argument("--on", choices=["slurm"])
    connect.add_argument("--jobs", type=int)
    connect.add_argument("--cores", type=int)
    for option in ("--memory", "--walltime", "--partition", "--account", "--interface"):
        connect.add_argument(option)
    connect.add_argument("--log-directory")
    connect.add_argument("--job-extra", action="append")
    commands.add_parser("status", add_help=False)
    scale = commands.add_parser("scale", add_help=False)
    scale.add_argument("n", type=int)
    commands.add_parser("disconnect", add_help=False)
    freeze = commands.add_parser("freeze", add_help=False)
    freeze.add_argument("--name")
    freeze.add_argument("--out")
    freeze.add_argument("--notebook")
    runs = commands.add_parser("runs", add_help=False)
    runs.add_argument("root", nargs="?", default=None)
    train = commands.add_parser("train", add_help=False)
    train.add_argument("data", nargs="?", default=None)
    train.add_argument("--latent", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--backend", choices=["auto", "in-process", *known_backends()])
    search = commands.add_parser("search", add_help=False)
    tune_parser = commands.add_parser("tune", add_help=False)
    tune_parser.add_argument("data", nargs="?", default=None)
    tune_parser.add_argument("--space")
    tune_parser.add_argument("--trials", type=int)
    tune_parser.add_argument("--epochs", type=int)
    tune_parser.add_argument("--scheduler", choices=["asha", "fifo"])
    search.add_argument("index", nargs="?", default=None)
    search.add_argument("--spectra")
    search.add_argument("--model")
    search.add_argument("--k", type=int, default=5)
    search.add_argument("--collection", default="spectra")
    return parser


@magics_class
class LabkitMagics(Magics):
    @line_magic
    def labkit(self, line: str):
        """Attach this notebook to a Ray or Dask cluster; ``%labkit`` alone prints usage."""
        words = shlex.split(line)
        if not words or words[0] not in _HANDLERS:
            if words:
                print(f"%labkit: unknown sub-command {words[0]!r}\n", file=sys.stderr)
            print(USAGE)
            return None
        args = _parser().parse_args(words)
        return _HANDLERS[args.command](args)


def _connect(args: argparse.Namespace) -> None:
    cluster = labkit.connect(
        args.address,
        backend=args.backend,
        workers=args.workers,
        timeout=args.timeout,
        token_file=args.token_file,
        security=_security(args),
        on=args.on,
        **_slurm_options(args),
    )
    display(cluster)


def _slurm_options(args: argparse.Namespace) -> dict:
    """The SLURM options given (labkit.connect refuses them without ``--on slurm``)."""
    names = ("jobs", "cores", "memory", "walltime", "partition", "account", "interface")
    names += ("log_directory",)  # fmt: skip
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.job_extra:
        given["job_extra"] = args.job_extra
    return given


def _security(args: argparse.Namespace):
    files = (args.tls_ca_file, args.tls_cert, args.tls_key)
    if not any(files):
        return None
    if not (args.tls_ca_file and args.tls_cert):
        raise LabkitError("%labkit connect: TLS needs --tls-ca-file and --tls-cert (and --tls-key)")
    from labkit.clusters.dask_auth import dask_security

    return dask_security(*files)


def _status(args: argparse.Namespace) -> None:
    display(labkit.current())


def _scale(args: argparse.Namespace) -> None:
    cluster = labkit.current()
    cluster.scale(args.n)
    display(cluster)


def _disconnect(args: argparse.Namespace) -> None:
    labkit.disconnect()
    print("labkit: disconnected")


def _freeze(args: argparse.Namespace) -> None:
    from IPython import get_ipython

    from labkit.runs import current_notebook_path, freeze

    shell = get_ipython()
    notebook = args.notebook or current_notebook_path(shell.user_ns if shell else None)
    path = freeze(notebook, name=args.name, out=args.out)
    print(f"labkit: froze {notebook} (as last saved) into {path}")


def _runs(args: argparse.Namespace) -> None:
    from labkit.runs import list_runs

    display(list_runs(args.root))


def _train(args: argparse.Namespace):
    from IPython import get_ipython

    from labkit.widgets.train_panel import TrainPanel

    shell = get_ipython()
    panel = TrainPanel(namespace=shell.user_ns if shell else None, data=args.data)
    panel.set_values(latent=args.latent, epochs=args.epochs, backend=args.backend)
    return panel


def _tune(args: argparse.Namespace):
    from IPython import get_ipython

    from labkit.widgets.tune_panel import TunePanel, parse_space

    shell = get_ipython()
    panel = TunePanel(namespace=shell.user_ns if shell else None, data=args.data)
    if args.space is not None:
        text = "\n".join(part.strip() for part in args.space.split(";"))
        parse_space(text)  # a bad space is refused here, on the magic's line
        panel.space.value = text
    for value, widget in ((args.trials, panel.samples), (args.epochs, panel.epochs)):
        if value is not None:
            if not widget.min <= value <= widget.max:
                raise LabkitError(f"%labkit tune: {value} is out of {widget.min}..{widget.max}")
            widget.value = value
    if args.scheduler is not None:
        panel.scheduler.value = args.scheduler
    return panel


def _search(args: argparse.Namespace):
    from IPython import get_ipython

    from labkit.widgets.search_panel import SearchPanel

    shell = get_ipython()
    return SearchPanel.from_namespace(
        shell.user_ns if shell else {},
        index=args.index,
        spectra=args.spectra,
        model=args.model,
        k=args.k,
        collection=args.collection,
    )


_HANDLERS = {
    "connect": _connect,
    "status": _status,
    "scale": _scale,
    "disconnect": _disconnect,
    "freeze": _freeze,
    "runs": _runs,
    "train": _train,
    "tune": _tune,
    "search": _search,
}


def _show_labkit_error(shell, etype, value, tb, tb_offset=None):
    """A user mistake is one line in the notebook, not a traceback into labkit."""
    message = f"{etype.__name__}: {value}"
    print(message, file=sys.stderr)
    return [message]


def register(ipython) -> None:
    ipython.register_magics(LabkitMagics)
    ipython.set_custom_exc((LabkitError,), _show_labkit_error)


def unregister(ipython) -> None:
    ipython.set_custom_exc((), None)
