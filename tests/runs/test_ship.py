"""Data files for hosts that do not see the notebook's folder (``labkit.runs.ship``).

The real path, a batch across namespace hosts one of which sees an empty folder, is in
tests/clusters/test_multinode.py; here a fake cluster reports what its hosts see, to reach
the refusals quickly, and ``place`` runs in this process as it would on a host.
"""

from __future__ import annotations

import hashlib

import pytest

from labkit.errors import BundleError
from labkit.runs import ship


class HostsReport:
    """A cluster whose hosts see what ``report`` says; records what it was asked to run."""

    def __init__(self, report: dict[str, list[str]]):
        self.report, self.ran = report, []

    def run_on_each_host(self, fn):
        self.ran.append(fn)
        return self.report if len(self.ran) == 1 else {host: fn() for host in self.report}


def _entry(tmp_path, name: str, data: bytes) -> dict:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return {"path": name, "resolved": str(path), "sha256": digest, "bytes": len(data)}


def test_hosts_that_see_everything_get_nothing(tmp_path):
    files = [_entry(tmp_path, "data/a.txt", b"1 2 3")]
    cluster = HostsReport({"10.0.0.1": [], "10.0.0.2": []})
    assert ship.ship_data(cluster, {"working_dir": str(tmp_path), "data_files": files}) is None
    assert len(cluster.ran) == 1  # asked, nothing shipped
    assert ship.unseen_files(str(tmp_path), files) == []
    assert ship.unseen_files(str(tmp_path / "gone"), files) == [
        str(tmp_path / "gone"),
        "data/a.txt",
    ]


def test_files_named_by_an_absolute_path_are_refused_naming_them_and_the_host(tmp_path):
    absolute = str(tmp_path / "elsewhere.fits")
    files = [_entry(tmp_path, "elsewhere.fits", b"x") | {"path": absolute}]
    cluster = HostsReport({"10.0.0.2": [absolute]})
    with pytest.raises(BundleError, match="10.0.0.2 cannot see data file") as err:
        ship.ship_data(cluster, {"working_dir": str(tmp_path), "data_files": files})
    assert absolute in str(err.value) and "absolute path" in str(err.value)
    assert len(cluster.ran) == 1  # refused before anything was sent


def test_too_much_data_is_refused_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.setattr(ship, "SHIP_LIMIT_BYTES", 4)
    files = [_entry(tmp_path, "data/big.bin", b"123456")]
    cluster = HostsReport({"10.0.0.2": [str(tmp_path / "nope")]})
    with pytest.raises(BundleError, match="too large to ship") as err:
        ship.ship_data(cluster, {"working_dir": str(tmp_path / "nope"), "data_files": files})
    assert "data/big.bin" in str(err.value) and "shares" in str(err.value)
    assert len(cluster.ran) == 1


def test_shipped_files_are_checked_on_arrival_and_kept_once(tmp_path, monkeypatch):
    monkeypatch.setattr(ship.tempfile, "tempdir", str(tmp_path / "host-tmp"))
    files = [_entry(tmp_path / "src", "data/a.txt", b"1 2 3")]
    blind = str(tmp_path / "not-here")
    with pytest.raises(BundleError, match="data/a.txt arrived damaged"):
        ship.place("k1", blind, files, {"data/a.txt": b"1 2 4"})
    assert not ship.shipped_folder("k1").exists()  # nothing half-kept
    folder = ship.place("k1", blind, files, {"data/a.txt": b"1 2 3"})
    assert (
        tmp_path / "host-tmp" / "labkit-bundles" / "k1" / "data" / "a.txt"
    ).read_bytes() == b"1 2 3"
    assert ship.place("k1", blind, files, {"data/a.txt": b"1 2 3"}) == folder
    # a host that sees the source folder keeps nothing
    assert ship.place("k2", str(tmp_path / "src"), files, {"data/a.txt": b"1 2 3"}) is None
