"""``read`` and ``write``: survey files in, one ``Spectra`` out, and back.

``read`` takes a file, a folder, a glob or a list of them; it detects each file's format
(DESI coadd, SDSS spec-lite, or any other registered in ``labkit.spectra.formats``), reads
the files in parallel on the active cluster when there is one (workers must see the same
paths), and stacks them in the order given.
"""

from __future__ import annotations

import glob as globbing
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.io import fits

from labkit.clusters import ClusterSpec, using_cluster
from labkit.errors import ParameterError, SpectraError, SpectraFileError, SpectraWarning
from labkit.spectra import desi, sdss  # noqa: F401 - importing them registers their formats
from labkit.spectra.container import Spectra, concatenate
from labkit.spectra.formats import FITS_SUFFIXES, get_format, identify, unknown_layout
from labkit.spectra.redshifts import join_redshifts, load_redshifts

ON_ERROR = ("raise", "skip")
# astropy only warns about these, and drops what follows: a cut-off file
DAMAGE = re.compile(r"truncated|Error validating header")


@dataclass
class FileFailure:
    """A file that could not be read, carried back from a worker."""

    path: str
    message: str


def read(
    source: str | Path | list[str | Path],
    redshifts: Any = None,
    *,
    on_error: str = "raise",
    cluster: ClusterSpec = None,
    progress: bool = True,
) -> Spectra:
    """Read DESI and SDSS spectra files into one ``Spectra``, rows in file order.

    ``redshifts``: a redrock/zbest file (or glob, or list), or a table with TARGETID and Z
    (and SPECTYPE), joined by target id; it wins over redshifts inside the files.
    ``on_error="skip"`` warns once, listing unreadable files, and returns the rest.
    ``cluster``: None uses the active cluster if any, False reads in this process.
    Raises ``SpectraFileError`` naming the file at fault.
    """
    if on_error not in ON_ERROR:
        raise ParameterError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    paths = resolve_paths(source)
    table = load_redshifts(redshifts) if redshifts is not None else None
    with using_cluster(cluster) as chosen:
        if chosen is not None and len(paths) > 1:
            outcomes = chosen.map(_read_guarded, paths, progress=progress, desc="read spectra")
        else:
            from tqdm.auto import tqdm

            shown = progress and len(paths) > 1
            names = tqdm(paths, desc="read spectra", disable=not shown)
            outcomes = [_read_guarded(p) for p in names]
    failures = [o for o in outcomes if isinstance(o, FileFailure)]
    if failures and on_error == "raise":
        raise SpectraFileError(failures[0].message, path=failures[0].path)
    parts = [o for o in outcomes if isinstance(o, Spectra)]
    if failures:
        listed = "; ".join(f"{f.path} ({f.message})" for f in failures)
        warnings.warn(
            f"skipped {len(failures)} unreadable file(s): {listed}", SpectraWarning, stacklevel=2
        )
    if not parts:
        raise SpectraError(f"none of the {len(paths)} file(s) could be read")
    spectra = concatenate(parts)
    return join_redshifts(spectra, table) if table is not None else spectra


def resolve_paths(source: Any) -> list[str]:
    """Files named by a path, folder, glob, or list of those, in the order given."""
    if isinstance(source, (str, Path)):
        items = [source]
    elif isinstance(source, (list, tuple)):
        items = list(source)
    else:
        raise ParameterError(
            f"read() takes a path, folder, glob or list of them, got {type(source).__name__}"
        )
    if not items:
        raise SpectraError("no files given to read")
    paths: list[str] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise ParameterError(f"not a path: {item!r}")
        text = str(item)
        if Path(text).is_dir():
            found = sorted(str(p) for p in Path(text).iterdir() if p.name.endswith(FITS_SUFFIXES))
            if not found:
                raise SpectraError(
                    f"no FITS files ({', '.join(FITS_SUFFIXES)}) in the folder {text}"
                )
            paths += found
        elif globbing.has_magic(text):
            found = sorted(globbing.glob(text))
            if not found:
                raise SpectraError(f"no file matches {text}")
            paths += found
        else:
            paths.append(text)  # a missing file is reported (or skipped) when read
    return paths


def read_file(path: str) -> Spectra:
    """One file, whatever its layout; ``SpectraFileError`` naming it when it cannot be read."""
    if not Path(path).is_file():
        raise SpectraFileError("no such file", path=path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fits.open(path, memmap=False) as hdul:
                hdul.readall()  # every header, so damage anywhere shows now
                damaged = [str(w.message) for w in caught if DAMAGE.search(str(w.message))]
                if damaged:
                    raise SpectraFileError(f"truncated FITS file: {damaged[0]}", path=path)
                fmt = identify(hdul)
                if fmt is not None:
                    return fmt.read(path, hdul)
                unknown = unknown_layout(hdul)
    except SpectraError:
        raise
    except Exception as exc:
        raise SpectraFileError(f"corrupt or unreadable FITS file: {exc}", path=path) from None
    raise SpectraFileError(unknown, path=path)


def _read_guarded(path: str) -> Spectra | FileFailure:
    try:
        return read_file(path)
    except SpectraFileError as exc:
        return FileFailure(exc.path, str(exc).removeprefix(f"{exc.path}: "))


def write(
    spectra: Spectra, path: str | Path, format: str = "desi", *, overwrite: bool = False
) -> list[Path]:
    """Write ``spectra`` in a registered format; returns the files written.

    ``format="desi"``: ``path`` ending in .fits is one coadd file; otherwise a folder that
    gets coadd files of up to 500 spectra each. ``format="sdss"``: ``path`` is a folder
    that gets one spec-lite file per spectrum. A folder must hold no FITS files yet;
    ``overwrite=True`` replaces files labkit wrote there (never anyone else's).
    """
    if not isinstance(spectra, Spectra):
        raise ParameterError(f"write() needs a Spectra, got {type(spectra).__name__}")
    fmt = get_format(format)
    if len(spectra) == 0:
        raise SpectraError("there are no spectra to write")
    path = Path(path)
    try:
        return fmt.write(spectra, path, overwrite)
    except OSError as exc:
        if "already exists" in str(exc):
            raise SpectraFileError(
                "already exists; pass overwrite=True to replace it", path=str(path)
            ) from None
        raise SpectraFileError(f"cannot write: {exc}", path=str(path)) from None
