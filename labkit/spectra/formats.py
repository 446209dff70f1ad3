"""Survey file formats, one record each, registered by name (as astropy's I/O registry does).

A format says how to recognise one of its files (``identify``, given the open FITS file), how
to read one file, and how to write a ``Spectra`` to a path (one file or a folder of them).
``read`` tries every registered format's ``identify``; ``write`` looks the format up by name.
DESI (``labkit.spectra.desi``) and SDSS (``labkit.spectra.sdss``) register themselves.

The folder rules writers share live here too: a folder gets one whole survey, so it must hold
no FITS files yet, and ``overwrite`` replaces only files labkit wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from labkit.errors import ParameterError, SpectraFileError
from labkit.spectra.container import Spectra

FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")
LABKIT_MARK = "LKFRAME"  # the frame card every file labkit writes carries


@dataclass(frozen=True)
class SpectraFormat:
    """One survey file format.

    ``identify(hdul)``: whether an open FITS file is in this format. ``read(path, hdul)``:
    that file as ``Spectra``. ``write(spectra, path, overwrite)``: the files written.
    ``looks_for``: what ``identify`` checks, for the error about a file no format knows.
    """

    name: str
    identify: Callable[[fits.HDUList], bool]
    read: Callable[[str, fits.HDUList], Spectra]
    write: Callable[[Spectra, Path, bool], list[Path]]
    looks_for: str


_FORMATS: dict[str, SpectraFormat] = {}


def register_format(fmt: SpectraFormat, *, replace: bool = False) -> SpectraFormat:
    """Add ``fmt`` to the registry; a name taken already is an error unless ``replace``."""
    if fmt.name in _FORMATS and not replace:
        raise ParameterError(f"a spectra format named {fmt.name!r} is registered already")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format (tests register fakes and take them away again)."""
    _FORMATS.pop(name, None)


def format_names() -> tuple[str, ...]:
    """The registered formats' names, in registration order."""
    return tuple(_FORMATS)


def get_format(name: str) -> SpectraFormat:
    """The format registered as ``name``; ParameterError listing the registered ones."""
    try:
        return _FORMATS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"format must be one of {format_names()}, got {name!r}") from None


def identify(hdul: fits.HDUList) -> SpectraFormat | None:
    """The first registered format that recognises ``hdul``, or None."""
    return next((fmt for fmt in _FORMATS.values() if fmt.identify(hdul)), None)


def unknown_layout(hdul: fits.HDUList) -> str:
    """Why no format reads ``hdul``: what each looks for, and the HDUs it has."""
    expected = [fmt.looks_for for fmt in _FORMATS.values()]
    wanted = "neither " + " nor ".join(expected) if len(expected) > 1 else "not " + expected[0]
    names = ", ".join(hdu.name or "(unnamed)" for hdu in hdul)
    return f"unknown layout: {wanted}; its HDUs are {names}"


def prepare_folder(folder: Path, overwrite: bool) -> None:
    """Make ``folder`` ready for a whole survey: refuse to mix it with FITS files already there.

    With ``overwrite``, files labkit wrote earlier (marked in their header) are removed;
    anyone else's files stop the write.
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in folder.iterdir() if p.name.endswith(FITS_SUFFIXES))
    if not existing:
        return
    if not overwrite:
        raise SpectraFileError(
            f"already holds {len(existing)} FITS file(s); pass overwrite=True to replace the "
            "ones labkit wrote, or choose an empty folder",
            path=str(folder),
        )
    foreign = [p.name for p in existing if not _written_by_labkit(p)]
    if foreign:
        raise SpectraFileError(
            f"holds FITS files labkit did not write ({', '.join(foreign[:5])}); "
            "choose another folder",
            path=str(folder),
        )
    for stale in existing:
        stale.unlink()


def refuse_existing(path: Path, overwrite: bool) -> None:
    """SpectraFileError when ``path`` exists and may not be replaced."""
    if path.exists() and not overwrite:
        raise SpectraFileError("already exists; pass overwrite=True to replace it", path=str(path))


def _written_by_labkit(path: Path) -> bool:
    try:
        return LABKIT_MARK in fits.getheader(path, 0)
    except Exception:
        return False
