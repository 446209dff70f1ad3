"""Real index back-ends for the vector tests: a milvus-lite file in this process, and
`milvus-lite server` as its own process on a loopback port (stopped by PID); a small rest-frame
survey and a real (briefly trained) SpectrumVAE for the embedding and widget tests."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from tests.conftest import BIN, free_port, start_process, stop_process, wait_for_service

_names = itertools.count()


@dataclass
class MilvusServer:
    uri: str
    data_dir: Path
    proc: object


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[MilvusServer]:
    """`milvus-lite server --data-dir DIR --host 127.0.0.1 --port P`, reached over gRPC."""
    work = tmp_path_factory.mktemp("milvus-server")
    port = free_port()
    log = work / "server.log"
    proc = start_process(
        [
            str(BIN / "milvus-lite"),
            "server",
            "--data-dir",
            str(work / "data"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        log,
    )
    try:
        wait_for_service(
            proc,
            log,
            lambda: socket.create_connection(("127.0.0.1", port), 1).close() or True,
            "milvus-lite server",
        )
        yield MilvusServer(f"http://127.0.0.1:{port}", work / "data", proc)
    finally:
        stop_process(proc)


@dataclass
class Place:
    """Where a test's index lives: a URI and a collection name no other test uses."""

    kind: str
    uri: str
    collection: str


@pytest.fixture(params=["embedded", "server"])
def place(request, tmp_path) -> Iterator[Place]:
    """The same test, once on a *.db file (embedded) and once against the server process."""
    name = f"t{next(_names)}_{request.node.name.split('[')[0][-40:]}"
    if request.param == "embedded":
        yield Place("embedded", str(tmp_path / "index.db"), name)
    else:
        server = request.getfixturevalue("milvus_server")
        yield Place("server", server.uri, name)


@pytest.fixture
def open_index(place):
    """``open_index(dim=..., **options)`` -> a SpectrumIndex at ``place``, closed afterwards."""
    from labkit.vectors import SpectrumIndex

    opened = []

    def make(dim=None, **options):
        options.setdefault("collection", place.collection)
        options.setdefault("timeout", 20)
        index = SpectrumIndex(place.uri, dim, **options)
        opened.append(index)
        return index

    yield make
    for index in reversed(opened):
        index.close()


def random_rows(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Table]:
    """ids, vectors and meta with every schema field, some z missing."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) * 7 + 39_627_000_000_000_000
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    z = np.ma.masked_array(rng.uniform(0, 3, n), mask=np.arange(n) % 17 == 5)
    meta = Table(
        {
            "targetid": ids,
            "z": z,
            "spectype": np.array(["QSO", "GALAXY", "STAR"])[np.arange(n) % 3],
            "label": np.array(["qso", "galaxy", "star", "odd"])[np.arange(n) % 4],
            "anomaly_score": rng.normal(0, 1, n),
            "source_file": [f"coadd-{i % 5}.fits" for i in range(n)],
        }
    )
    return ids, vectors, meta


# -- a small rest-frame survey and a real model for the embedding and widget tests ----------
CLASSES = ("QSO", "GALAXY", "STAR")


def _line(wave, center, width, height):
    return height * np.exp(-0.5 * ((wave - center) / width) ** 2)


def small_survey(n: int = 150, pixels: int = 160, seed: int = 1):
    """Rest-frame spectra on one log grid: quasars (broad lines), galaxies (narrow lines and a
    4000 Å break), stars (a Planck-like slope with absorption), and a few odd ones."""
    from labkit.spectra import Spectra

    rng = np.random.default_rng(seed)
    wave = np.exp(np.linspace(np.log(1200.0), np.log(7000.0), pixels))
    flux = np.empty((n, pixels), np.float32)
    spectype, label = [], []
    for i in range(n):
        kind = CLASSES[i % 3]
        if kind == "QSO":
            f = (wave / 3000.0) ** -0.5
            for c, w, h in ((1216, 20, 4), (1549, 25, 1.5), (2798, 30, 1), (4861, 40, 0.8)):
                f = f + _line(wave, c, w, h * rng.uniform(0.7, 1.3))
        elif kind == "GALAXY":
            f = np.where(wave > 4000, 1.0, 0.55) + 0.05 * rng.standard_normal()
            for c, h in ((3727, 1.2), (5007, 1.5), (6563, 2.0)):
                f = f + _line(wave, c, 4, h * rng.uniform(0.5, 1.5))
        else:
            f = (wave / 5000.0) ** -2 * np.exp(-5000.0 / wave) * 3
            for c in (3934, 3968, 4861, 6563):
                f = f - _line(wave, c, 6, 0.3)
        odd = i % 37 == 36
        if odd:  # a strong unexplained feature
            f = f + _line(wave, rng.uniform(2000, 6000), 15, 6)
        flux[i] = f / np.median(np.abs(f)) + rng.normal(0, 0.03, pixels)
        spectype.append(kind)
        label.append("odd" if odd else kind.lower())
    ivar = np.full_like(flux, 1 / 0.03**2)
    meta = Table(
        {
            "targetid": np.arange(n, dtype=np.int64) + 1000,
            "z": rng.uniform(0.05, 3.0, n),
            "spectype": spectype,
            "label": label,
            "is_anomaly": np.array(label) == "odd",
        }
    )
    return Spectra(wave, flux, ivar, meta=meta, frame="rest")


@pytest.fixture(scope="session")
def survey():
    return small_survey()


@pytest.fixture(scope="session")
def model(survey, tmp_path_factory):
    """A real SpectrumVAE, trained in-process for a few epochs (fast, not converged)."""
    from labkit.vae import TrainConfig, train

    config = TrainConfig(
        latent_dim=4, epochs=3, hidden=(64, 32), batch_size=64, patience=None, kl_warmup=1
    )
    result = train(
        survey,
        config,
        cluster="in-process",
        progress=False,
        checkpoint_dir=tmp_path_factory.mktemp("vae"),
    )
    return result.model
