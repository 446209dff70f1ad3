"""Client and cluster package drift, named at connect instead of discovered by a crash.

Tasks travel pickled: a notebook and a worker that differ in Python's minor version, in
cloudpickle's or numpy's major version, in the backend's own version, or a worker without
labkit, fail in ways that never name the cause. ``check`` compares the notebook's versions
with every host's and raises ``VersionMismatchError`` for those, naming the package, both
versions and the host; any other difference is one warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cloudpickle

from labkit.clusters import host_versions
from labkit.errors import VersionMismatchError

# sent by value: the probe also answers on a host where labkit is missing
cloudpickle.register_pickle_by_value(host_versions)

# what must agree for tasks to run: how many leading version parts, per package
Versions = dict[str, str | None]  # package -> version (None: not installed)

BREAKING_PARTS = {"python": 2, "cloudpickle": 1, "numpy": 1, "ray": 3, "dask": 2, "distributed": 2}
BACKEND_PACKAGES = {"ray": ("ray",), "dask": ("dask", "distributed")}
COMMON = ("python", "cloudpickle", "numpy", "labkit")


@dataclass(frozen=True)
class Mismatch:
    package: str
    host: str
    client: str | None
    remote: str | None
    breaking: bool

    def __str__(self) -> str:
        return (
            f"{self.package} {self.remote or 'not installed'} on {self.host}, "
            f"{self.client or 'not installed'} in this notebook"
        )


def packages_for(backend: str) -> tuple[str, ...]:
    return COMMON + BACKEND_PACKAGES.get(backend, ())


def _parts(version: str, n: int) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:n])


def compare(
    client: dict[str, str | None],
    hosts: dict[str, dict[str, str | None]],
    packages: tuple[str, ...],
) -> list[Mismatch]:
    """Every difference between ``client`` and each host's versions, breaking ones first."""
    found = []
    for host, remote in sorted(hosts.items()):
        for package in packages:
            mine, theirs = client.get(package), remote.get(package)
            if mine == theirs:
                continue
            if mine is None or theirs is None:
                breaking = True  # a package a task needs is missing on one side
            else:
                parts = BREAKING_PARTS.get(package)
                breaking = parts is not None and _parts(mine, parts) != _parts(theirs, parts)
            found.append(Mismatch(package, host, mine, theirs, breaking))
    return sorted(found, key=lambda m: not m.breaking)


def client_versions() -> Versions:
    return host_versions.versions()


def check(backend: str, hosts: dict[str, Versions], address: str) -> None:
    """Raise for a breaking mismatch between this process and ``hosts``; warn once for others."""
    mismatches = compare(client_versions(), hosts, packages_for(backend))
    breaking = [m for m in mismatches if m.breaking]
    if breaking:
        raise VersionMismatchError(
            f"the {backend} cluster at {address} runs other versions than this notebook, "
            f"which break its tasks: {'; '.join(map(str, breaking))}. Install the same "
            "versions on both sides (pip install package==version)"
        )
    if mismatches:
        warnings.warn(
            f"the {backend} cluster at {address} differs from this notebook in minor versions: "
            f"{'; '.join(map(str, mismatches))}",
            stacklevel=3,
        )
