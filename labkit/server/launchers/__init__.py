"""Server-side launchers of the registered cluster backends (see ``clusters.backends``)."""

from __future__ import annotations

from labkit.clusters.backends import backend_record, known_backends, load
from labkit.server.launchers.base import Launcher

__all__ = ["Launcher", "launcher_class", "launcher_targets"]


def launcher_targets(on: str = "local") -> dict[str, str]:
    """Backend name -> "module:Class" of its launcher, for every backend the server manages
    ``on`` this machine ("local") or on SLURM ("slurm")."""
    records = [backend_record(name) for name in known_backends()]
    found = {r.name: r.slurm_launcher if on == "slurm" else r.launcher for r in records}
    return {name: target for name, target in found.items() if target}


def launcher_class(backend: str) -> type[Launcher]:
    """The registered launcher of ``backend``; KeyError when it has none."""
    return load(launcher_targets()[backend])
