"""Server-side launchers of the registered cluster backends (see ``clusters.backends``)."""

from __future__ import annotations

from labkit.clusters.backends import backend_record, known_backends, load
from labkit.server.launchers.base import Launcher

__all__ = ["Launcher", "launcher_class", "launcher_targets"]


def launcher_targets() -> dict[str, str]:
    """Backend name -> "module:Class" of its launcher, for every backend the server manages."""
    records = [backend_record(name) for name in known_backends()]
    return {record.name: record.launcher for record in records if record.launcher}


def launcher_class(backend: str) -> type[Launcher]:
    """The registered launcher of ``backend``; KeyError when it has none."""
    return load(launcher_targets()[backend])
