"""Spectra fixtures: archive-layout files written with astropy alone, and a small mock survey."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import labkit
from labkit.spectra import mock_survey
from tests.spectra.archive import arm_waves, write_desi_coadd, write_redrock

REAL_DESI = Path(
    os.environ.get("LABKIT_DESI_DATA", Path(__file__).parents[3] / "shared" / "data" / "desi")
)
LINE_REST = 5008.24  # [O III]: the line every live fixture spectrum carries


def real_desi_files() -> list[Path]:
    """The real archive coadds in ../shared/data/desi (CI always has them beside the clone)."""
    files = sorted(REAL_DESI.glob("coadd-*.fits")) if REAL_DESI.is_dir() else []
    assert files, f"real DESI coadds not found in {REAL_DESI}; set LABKIT_DESI_DATA to their folder"
    return files


@dataclass
class DesiArchive:
    folder: Path
    coadds: list[Path]
    redrock: list[Path]
    targetid: np.ndarray  # all fibres, file order
    z: np.ndarray  # NaN for dead fibres
    live: np.ndarray  # bool per fibre


def desi_content(rng, n: int, dead: list[int], z: np.ndarray, noise: float = 0.5):
    """Per-arm flux/ivar/mask: a power law and an [O III] line at ``z``; dead fibres all 0."""
    flux, ivar, mask = {}, {}, {}
    for arm, wave in arm_waves().items():
        rest = wave[None, :] / (1 + z[:, None])
        model = 5.0 * (rest / 5000.0) ** -1.0
        model += 60.0 / np.sqrt(2 * np.pi) / 1.5 * np.exp(-0.5 * ((rest - LINE_REST) / 1.5) ** 2)
        f = model + rng.normal(0, noise, model.shape)
        iv = np.full(model.shape, 1 / noise**2)
        m = np.zeros(model.shape, np.uint32)
        if arm == "R":
            m[:, 1000:1004] = 1  # a few flagged pixels, as cosmic-ray hits leave
        f[dead], iv[dead] = 0.0, 0.0
        flux[arm], ivar[arm], mask[arm] = f, iv, m
    return flux, ivar, mask


@pytest.fixture(scope="session")
def desi_archive(tmp_path_factory) -> DesiArchive:
    """Two coadds of 5 fibres each, as DESI writes them (3 dead fibres with negative
    TARGETIDs in the first, 2 in the second), and a redrock file per coadd."""
    folder = tmp_path_factory.mktemp("desi-archive")
    rng = np.random.default_rng(42)
    layouts = [
        (np.array([-1695072, 39633297352951412, -1695064, -1695073, 39633300968442591]), [0, 2, 3]),
        (
            np.array(
                [-2713437, -2713415, 39627866878511337, 616088619186127404, 39627866878514741]
            ),
            [0, 1],
        ),
    ]
    coadds, redrock, ids, zs, live = [], [], [], [], []
    for k, (targetid, dead) in enumerate(layouts):
        z = rng.uniform(0.1, 0.8, targetid.size)
        flux, ivar, mask = desi_content(rng, targetid.size, dead, z)
        coadds.append(write_desi_coadd(folder / f"coadd-{k}-169.fits", targetid, flux, ivar, mask))
        spectype = np.where(np.isin(np.arange(targetid.size), dead), "", "GALAXY")
        redrock.append(write_redrock(folder / f"redrock-{k}-169.fits", targetid, z, spectype))
        alive = ~np.isin(np.arange(targetid.size), dead)
        ids.append(targetid)
        zs.append(z)
        live.append(alive)
    return DesiArchive(
        folder, coadds, redrock, np.concatenate(ids), np.concatenate(zs), np.concatenate(live)
    )


@pytest.fixture(scope="session")
def small_mock():
    """120 mock spectra, 10 % anomalies: every anomaly class twice."""
    return mock_survey(120, anomaly_fraction=0.1, seed=7)


@pytest.fixture(params=["ray", "dask"])
def cluster(request):
    """The session's Ray head or Dask scheduler, attached through labkit.connect."""
    if request.param == "dask":
        dask_scheduler = request.getfixturevalue("dask_scheduler")
        return labkit.connect(dask_scheduler.address, timeout=30)
    ray_head = request.getfixturevalue("ray_head")
    return labkit.connect(
        ray_head.gcs_address, backend="ray", token_file=ray_head.token_file, timeout=30
    )
