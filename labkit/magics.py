"""``%labkit`` line magics: parse the line, call the Python API, display the result."""

from __future__ import annotations

import argparse
import shlex
import sys

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import display

import labkit
from labkit.errors import LabkitError

USAGE = """\
usage: %labkit SUBCOMMAND [options]

  connect [ADDRESS|NAME|local] [--backend ray|dask] [--workers N] [--timeout S] [--token-file F]
  status                 backend, address, dashboard link, workers, cpus, gpus, memory
  scale N                resize the local cluster
  disconnect             close the active cluster
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
    connect.add_argument("--backend", choices=["ray", "dask"])
    connect.add_argument("--workers", type=int)
    connect.add_argument("--timeout", type=float, default=labkit.clusters.session.DEFAULT_TIMEOUT)
    connect.add_argument("--token-file")
    commands.add_parser("status", add_help=False)
    scale = commands.add_parser("scale", add_help=False)
    scale.add_argument("n", type=int)
    commands.add_parser("disconnect", add_help=False)
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
    )
    display(cluster)


def _status(args: argparse.Namespace) -> None:
    display(labkit.current())


def _scale(args: argparse.Namespace) -> None:
    cluster = labkit.current()
    cluster.scale(args.n)
    display(cluster)


def _disconnect(args: argparse.Namespace) -> None:
    labkit.disconnect()
    print("labkit: disconnected")


_HANDLERS = {
    "connect": _connect,
    "status": _status,
    "scale": _scale,
    "disconnect": _disconnect,
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
