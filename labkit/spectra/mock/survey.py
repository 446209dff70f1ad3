"""``mock_survey``: a survey of quasars, galaxies and stars, with rare anomalies, and the truth.

Normal classes (``label``): ``qso``, ``galaxy_starforming``, ``galaxy_passive``, ``star``
(``subtype`` A/F/G/K/M). Anomalies (``is_anomaly``), spread evenly over six classes that
each differ from the normal population in a way a careful astronomer would flag:

- ``bal_qso``: quasars with broad absorption troughs from outflows (HiBAL/LoBAL);
- ``wrong_line_ratio``: star-forming galaxies whose lines break atomic physics
  ([O III] 4959 > 5007, Hα/Hβ below Case B, [N II] 6548 > 6583);
- ``artefact``: normal objects hurt by the instrument (arm flux-calibration jump, dead or
  hot block of pixels, unmasked sky residuals, unmasked cosmic rays);
- ``double_redshift``: two galaxies at different redshifts in one fibre;
- ``extreme_emitter``: galaxies with [O III] equivalent widths of hundreds of Å;
- ``wd_m_binary``: a white dwarf and an M dwarf in one spectrum.

Everything is drawn from one seed, in fixed blocks of rows, so a seed gives the same
survey on every machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from astropy.table import Table

from labkit.checks import whole
from labkit.errors import ParameterError
from labkit.spectra.container import FLUX_UNIT, Spectra, concatenate
from labkit.spectra.mock import lines as L
from labkit.spectra.mock import sources
from labkit.spectra.mock.instrument import instrument as get_instrument
from labkit.spectra.mock.instrument import observe, sky

NORMAL = {"qso": 0.3, "galaxy_starforming": 0.32, "galaxy_passive": 0.2, "star": 0.18}
ANOMALIES = (
    "bal_qso",
    "wrong_line_ratio",
    "artefact",
    "double_redshift",
    "extreme_emitter",
    "wd_m_binary",
)
SPECTYPE = {
    "qso": "QSO",
    "galaxy_starforming": "GALAXY",
    "galaxy_passive": "GALAXY",
    "star": "STAR",
    "bal_qso": "QSO",
    "wrong_line_ratio": "GALAXY",
    "double_redshift": "GALAXY",
    "extreme_emitter": "GALAXY",
    "wd_m_binary": "STAR",
}
STAR_KINDS = {"A": 0.1, "F": 0.25, "G": 0.25, "K": 0.2, "M": 0.2}
ARTEFACTS = ("arm_jump", "dead_block", "hot_block", "sky_residuals", "cosmic_rays")
VIOLATIONS = ("oiii_doublet", "balmer_decrement", "nii_doublet")
BLOCK = 256  # rows drawn together; fixed, so results do not depend on memory or machine
TARGETID_BASE = 39_600_000_000_000_000


def mock_survey(
    n: int,
    anomaly_fraction: float = 0.01,
    seed: int = 0,
    *,
    instrument: str = "desi",
    progress: bool = False,
) -> Spectra:
    """``n`` mock spectra on the ``instrument``'s grid ("desi" or "sdss"), deterministic per seed.

    ``meta`` holds targetid, ra, dec, z, spectype, and the truth: label, is_anomaly,
    subtype, mag_r. round(n × anomaly_fraction) spectra are anomalies.
    """
    _check(n, anomaly_fraction, seed, instrument)
    inst = get_instrument(instrument)
    rng = np.random.default_rng([seed, 0])
    labels, base = _labels(rng, n, anomaly_fraction)
    z, subtype, star_kind, mag = _draws(rng, labels, base)
    flux = np.empty((n, inst.wave.size), dtype=np.float32)
    ivar = np.empty_like(flux)
    mask = np.empty(flux.shape, dtype=bool)
    from tqdm.auto import tqdm

    for k, start in enumerate(tqdm(range(0, n, BLOCK), desc="mock survey", disable=not progress)):
        rows = slice(start, min(start + BLOCK, n))
        block_rng = np.random.default_rng([seed, 1, k])
        flux[rows], ivar[rows], mask[rows] = _block(
            block_rng,
            inst,
            labels[rows],
            base[rows],
            z[rows],
            subtype[rows],
            star_kind[rows],
            mag[rows],
        )
    meta = _meta(rng, inst.name, seed, labels, base, z, subtype, mag)
    return Spectra(inst.wave, flux, ivar, mask, meta, flux_unit=FLUX_UNIT)


def _check(n, fraction, seed, instrument) -> None:
    whole("n", n, 1)
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ParameterError(f"anomaly_fraction must be between 0 and 1, got {fraction!r}")
    whole("seed", seed, 0)
    if instrument not in ("desi", "sdss"):
        raise ParameterError(f"instrument must be 'desi' or 'sdss', got {instrument!r}")


def _labels(
    rng, n: int, fraction: float, count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class of every row, and the normal class each anomaly is built on (artefacts).

    ``count`` anomalies (default round(n × fraction)).
    """
    labels = rng.choice(list(NORMAL), size=n, p=list(NORMAL.values())).astype("U20")
    base = labels.copy()
    count = int(round(n * fraction)) if count is None else count
    if count:
        rows = rng.choice(n, size=count, replace=False)
        kinds = np.resize(rng.permutation(ANOMALIES), count)
        labels[rows] = rng.permutation(kinds)
    return labels, base


def _draws(rng, labels, base):
    """Redshift, subtype and r magnitude per row, from each class's distribution."""
    n = labels.size
    z = np.zeros(n)
    subtype = np.full(n, "", dtype="U16")
    mag = rng.uniform(18.5, 21.5, n)
    kind = np.where(labels == "artefact", base, labels)
    draws = {
        "qso": lambda m: np.clip(0.3 + rng.gamma(3.0, 0.55, m), 0.3, 4.2),
        "galaxy_starforming": lambda m: np.clip(0.02 + rng.gamma(2.0, 0.3, m), 0.02, 1.55),
        "galaxy_passive": lambda m: np.clip(0.02 + rng.gamma(3.0, 0.15, m), 0.02, 1.05),
        "star": lambda m: rng.normal(0.0, 60.0, m) / L.C_KMS,
        "bal_qso": lambda m: rng.uniform(1.8, 3.8, m),
        "wrong_line_ratio": lambda m: rng.uniform(0.02, 0.35, m),
        "double_redshift": lambda m: rng.uniform(0.05, 0.5, m),
        "extreme_emitter": lambda m: rng.uniform(0.05, 0.75, m),
        "wd_m_binary": lambda m: rng.normal(0.0, 60.0, m) / L.C_KMS,
    }
    for name, draw in draws.items():
        rows = kind == name
        z[rows] = draw(rows.sum())
    star_kind = rng.choice(list(STAR_KINDS), size=n, p=list(STAR_KINDS.values()))
    stars = kind == "star"
    subtype[stars] = star_kind[stars]
    mag[stars | (labels == "wd_m_binary")] -= 1.5
    for name, options in (("artefact", ARTEFACTS), ("wrong_line_ratio", VIOLATIONS)):
        rows = labels == name
        subtype[rows] = rng.choice(options, size=rows.sum())
    return z, subtype, star_kind, mag


def _block(rng, inst, labels, base, z, subtype, star_kind, mag):
    """Noisy flux, ivar, mask for one block of rows."""
    wave, lsf = inst.wave, inst.resolution_sigma
    model = np.zeros((labels.size, wave.size))
    kind = np.where(labels == "artefact", base, labels)
    for name in (*NORMAL, *ANOMALIES):
        rows = np.flatnonzero(kind == name)
        if rows.size:
            model[rows], detail = _model(
                rng, name, wave, z[rows], lsf, subtype[rows], star_kind[rows]
            )
            if detail is not None:
                subtype[rows] = detail
    model *= (_flux_at_r(mag) / _level(model, wave))[:, None]
    artefact = labels == "artefact"
    variant = subtype
    _instrument_faults(
        rng, inst, model, artefact & ~np.isin(variant, ("sky_residuals", "cosmic_rays")), variant
    )
    depth = 10 ** rng.normal(0.0, 0.15, labels.size)
    mask_sky = ~(artefact & (variant == "sky_residuals"))
    flux, ivar, mask = observe(rng, inst, model, depth, mask_sky)
    _unmasked_faults(rng, inst, flux, ivar, artefact, variant)
    return flux, ivar, mask


def _model(rng, name, wave, z, lsf, subtype, star_kind):
    """Noiseless spectra of one class; also the subtype where the model decides it."""
    if name == "qso":
        return sources.quasar(rng, wave, z, lsf), None
    if name == "galaxy_starforming":
        return sources.star_forming_galaxy(rng, wave, z, lsf), None
    if name == "galaxy_passive":
        return sources.passive_galaxy(rng, wave, z, lsf), None
    if name == "star":
        return sources.star(rng, wave, z, lsf, star_kind), None
    if name == "bal_qso":
        troughs, lobal = sources.bal_troughs(rng, wave, z)
        return sources.quasar(rng, wave, z, lsf) * troughs, np.where(lobal, "LoBAL", "HiBAL")
    if name == "wrong_line_ratio":
        return _wrong_ratios(rng, wave, z, lsf, subtype), None
    if name == "double_redshift":
        return _double(rng, wave, z, lsf)
    if name == "extreme_emitter":
        n = z.size
        model = sources.star_forming_galaxy(
            rng,
            wave,
            z,
            lsf,
            ew_halpha=rng.uniform(600.0, 1500.0, n),
            log_nii_ha=rng.uniform(-2.0, -1.5, n),
            log_oiii_hb=rng.uniform(0.7, 0.9, n),
            ha_hb=np.full(n, L.CASE_B_HA_HB),
        )
        return model, None
    if name == "wd_m_binary":
        n = z.size
        dwarf = sources.star(rng, wave, z, lsf, np.full(n, "M"))
        companion = sources.white_dwarf(rng, wave, z, lsf)
        red = (wave > 7800) & (wave < 8200)
        share = (
            rng.uniform(2.0, 6.0, n)
            * np.median(companion[:, red], axis=1)
            / np.median(dwarf[:, red], axis=1)
        )
        return companion + share[:, None] * dwarf, None
    raise AssertionError(name)


def _wrong_ratios(rng, wave, z, lsf, violation):
    n = z.size
    oiii_ratio = np.where(violation == "oiii_doublet", rng.uniform(0.3, 0.8, n), L.OIII_RATIO)
    nii_ratio = np.where(violation == "nii_doublet", rng.uniform(0.3, 0.8, n), L.NII_RATIO)
    ha_hb = np.where(violation == "balmer_decrement", rng.uniform(0.6, 1.4, n), L.CASE_B_HA_HB)
    return sources.star_forming_galaxy(
        rng,
        wave,
        z,
        lsf,
        ew_halpha=rng.uniform(80.0, 250.0, n),
        log_nii_ha=np.where(
            violation == "nii_doublet", rng.uniform(-0.5, -0.3, n), rng.uniform(-1.0, -0.5, n)
        ),
        log_oiii_hb=np.where(
            violation == "oiii_doublet", rng.uniform(0.3, 0.6, n), rng.uniform(-0.3, 0.2, n)
        ),
        ha_hb=ha_hb,
        oiii_ratio=oiii_ratio,
        nii_ratio=nii_ratio,
    )


def _double(rng, wave, z, lsf):
    n = z.size
    z2 = z + rng.uniform(0.15, 0.7, n)
    front = sources.star_forming_galaxy(rng, wave, z, lsf)
    passive = rng.random(n) < 0.4
    back = np.where(
        passive[:, None],
        sources.passive_galaxy(rng, wave, z2, lsf),
        sources.star_forming_galaxy(rng, wave, z2, lsf),
    )
    ratio = rng.uniform(0.4, 1.0, n) * _level(front, wave) / _level(back, wave)
    return front + ratio[:, None] * back, np.where(passive, "sf+passive", "sf+sf")


def _flux_at_r(mag: np.ndarray) -> np.ndarray:
    """f_λ at 6200 Å of an AB magnitude, in 1e-17 erg/s/cm²/Å."""
    f_nu = 10 ** (-0.4 * (mag + 48.6))
    return f_nu * 2.998e18 / 6200.0**2 * 1e17


def _level(model: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Typical model flux near 6200 Å (the whole spectrum if that is not positive)."""
    window = (wave > 6000) & (wave < 6400)
    level = np.median(model[:, window], axis=1)
    whole = np.median(np.abs(model), axis=1)
    return np.where(level > 0, level, np.where(whole > 0, whole, 1.0))


def _instrument_faults(rng, inst, model, rows, variant) -> None:
    """Faults that change what reaches the detector: arm jumps, dead and hot blocks."""
    p = inst.wave.size
    for row in np.flatnonzero(rows):
        kind = variant[row]
        level = np.median(np.abs(model[row])) or 1.0
        if kind == "arm_jump":
            cut = rng.choice(inst.crossovers)
            factor = rng.uniform(0.3, 0.6) if rng.random() < 0.5 else rng.uniform(1.7, 3.0)
            model[row, inst.wave > cut] *= factor
        elif kind == "dead_block":
            start = rng.integers(0, p - 600)
            model[row, start : start + rng.integers(150, 600)] = 0.0
        elif kind == "hot_block":
            centre, width = rng.integers(100, p - 100), rng.uniform(15, 80)
            bump = np.exp(-0.5 * ((np.arange(p) - centre) / width) ** 2)
            model[row] += rng.uniform(4.0, 12.0) * level * bump


def _unmasked_faults(rng, inst, flux, ivar, artefact, variant) -> None:
    """Faults the pipeline misses: sky-line residuals and cosmic rays left in good pixels."""
    _, sky_lines = sky(inst)
    for row in np.flatnonzero(artefact & (variant == "sky_residuals")):
        flux[row] += (rng.uniform(0.25, 0.6) * sky_lines).astype(np.float32)
    for row in np.flatnonzero(artefact & (variant == "cosmic_rays")):
        hits = rng.integers(0, flux.shape[1] - 1, rng.integers(20, 60))
        sigma = 1.0 / np.sqrt(ivar[row, hits])
        flux[row, hits] += (rng.uniform(15.0, 40.0, hits.size) * sigma).astype(np.float32)


def _meta(rng, instrument, seed, labels, base, z, subtype, mag, first_row: int = 0) -> Table:
    n = labels.size
    kind = np.where(labels == "artefact", base, labels)
    index = np.arange(first_row, first_row + n, dtype=np.int64)
    meta = Table()
    if instrument == "sdss":
        plate, fiberid = 10000 + index // 1000, index % 1000 + 1
        mjd = np.full(n, 59000 + seed % 1000, dtype=np.int64)
        meta["targetid"] = plate * 10**9 + mjd * 10**4 + fiberid
        meta["plate"], meta["mjd"], meta["fiberid"] = plate, mjd, fiberid
    else:
        meta["targetid"] = TARGETID_BASE + seed * 10**9 + index
    meta["ra"] = rng.uniform(150.0, 160.0, n)
    meta["dec"] = np.degrees(np.arcsin(rng.uniform(0.0, np.sin(np.radians(10.0)), n)))
    meta["z"] = z
    meta["spectype"] = np.array([SPECTYPE[k] for k in kind], dtype="U6")
    meta["label"] = labels
    meta["is_anomaly"] = np.isin(labels, ANOMALIES)
    meta["subtype"] = subtype
    meta["mag_r"] = mag
    return meta


@dataclass(frozen=True)
class MockSource:
    """A mock survey described, not generated: ``rows(start, stop)`` makes any range of it.

    Rows come in blocks of ``BLOCK`` drawn from (seed, block index) alone, so a chunk is the
    same wherever and in whatever order it is generated; the anomalies are spread evenly
    over the blocks, round(n × anomaly_fraction) in all. (Not the same draws as
    ``mock_survey`` with that seed, which draws the whole survey's classes at once.)
    """

    n: int
    anomaly_fraction: float = 0.01
    seed: int = 0
    instrument: str = "desi"

    def __post_init__(self) -> None:
        _check(self.n, self.anomaly_fraction, self.seed, self.instrument)

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict:
        return {"mock": asdict(self)}

    def rows(self, start: int, stop: int) -> Spectra:
        """Rows ``start`` to ``stop`` of the survey (generated here, block by block)."""
        start, stop = max(0, start), min(self.n, stop)
        blocks = range(start // BLOCK, -(-stop // BLOCK))
        parts = [self._block(b) for b in blocks]
        joined = parts[0] if len(parts) == 1 else concatenate(parts)
        offset = blocks.start * BLOCK
        return joined[start - offset : stop - offset]

    def _anomalies_before(self, row: int) -> int:
        return int(round(row * self.anomaly_fraction))

    def _block(self, block: int) -> Spectra:
        inst = get_instrument(self.instrument)
        first, last = block * BLOCK, min((block + 1) * BLOCK, self.n)
        rng = np.random.default_rng([self.seed, 2, block])
        count = self._anomalies_before(last) - self._anomalies_before(first)
        labels, base = _labels(rng, last - first, self.anomaly_fraction, count)
        z, subtype, star_kind, mag = _draws(rng, labels, base)
        pixels = _block(
            np.random.default_rng([self.seed, 3, block]),
            inst,
            labels,
            base,
            z,
            subtype,
            star_kind,
            mag,
        )
        meta = _meta(rng, inst.name, self.seed, labels, base, z, subtype, mag, first_row=first)
        return Spectra(inst.wave, *pixels, meta, flux_unit=FLUX_UNIT)


def mock_source(
    n: int, anomaly_fraction: float = 0.01, seed: int = 0, *, instrument: str = "desi"
) -> MockSource:
    """A mock survey of ``n`` spectra for ``preprocess(..., out=STORE)``: each chunk is
    generated where it is processed, deterministically from the seed and its rows."""
    return MockSource(n, anomaly_fraction, seed, instrument)
