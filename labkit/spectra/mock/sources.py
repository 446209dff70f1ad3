"""Noiseless spectra of the mock survey's sources, drawn on an observed-frame grid.

Each model takes the observed wavelengths (P,) and redshifts (N,) and returns an (N, P)
array of f_λ in arbitrary units; ``survey`` scales it to a magnitude and adds noise.
Parameters (slopes, equivalent widths, widths, line ratios) are drawn per object around
values measured on real spectra, so every class varies the way survey objects do.
"""

from __future__ import annotations

import numpy as np

from labkit.spectra.mock import lines as L

H_C_OVER_K = 1.4388e8  # h c / k in Å K


def rest_wave(wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    return wave[None, :] / (1.0 + z)[:, None]


def planck(rest: np.ndarray, temperature: np.ndarray) -> np.ndarray:
    """Blackbody f_λ (arbitrary units) at (N,) temperatures, normalised at 5500 Å."""
    t = np.asarray(temperature, dtype=float)[:, None]
    shape = rest**-5 / np.expm1(np.minimum(H_C_OVER_K / (rest * t), 700))
    norm = 5500.0**-5 / np.expm1(H_C_OVER_K / (5500.0 * t))
    return shape / norm


def calzetti(rest: np.ndarray) -> np.ndarray:
    """Calzetti (2000) starburst attenuation curve k(λ)."""
    micron = np.clip(rest / 1e4, 0.09, 2.2)
    blue = 2.659 * (-2.156 + 1.509 / micron - 0.198 / micron**2 + 0.011 / micron**3) + 4.05
    red = 2.659 * (-1.857 + 1.040 / micron) + 4.05
    return np.where(micron < 0.63, blue, red)


def break_4000(rest: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Multiplier that lowers flux blueward of 4000 Å by ``strength`` (D4000 ≈ strength)."""
    step = 1.0 / (1.0 + np.exp(-(rest - 4000.0) / 35.0))
    low = 1.0 / np.asarray(strength)[:, None]
    return low + (1.0 - low) * step


def value_at(model: np.ndarray, wave: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """``model`` at the pixel nearest each row's ``centre`` (0 off the grid)."""
    at = np.clip(np.searchsorted(wave, centre), 0, wave.size - 1)
    inside = (centre >= wave[0]) & (centre <= wave[-1])
    return np.where(inside, model[np.arange(model.shape[0]), at], 0.0)


def add_gaussians(
    model: np.ndarray,
    wave: np.ndarray,
    centre: np.ndarray,
    sigma: np.ndarray,
    flux: np.ndarray,
    rows: np.ndarray | None = None,
) -> None:
    """Add Gaussian lines of integrated ``flux`` at observed ``centre`` with width ``sigma`` (Å).

    Arguments are per row (N,) of ``rows`` (default: all). Only ±5σ around each line is
    computed, so narrow lines cost little.
    """
    rows = np.arange(model.shape[0]) if rows is None else rows
    centre, sigma, flux = (
        np.broadcast_to(np.asarray(a, float), rows.shape) for a in (centre, sigma, flux)
    )
    lo = np.searchsorted(wave, centre - 5 * sigma)
    hi = np.searchsorted(wave, centre + 5 * sigma)
    width = int(np.max(hi - lo, initial=0))
    if width <= 0:
        return
    idx = lo[:, None] + np.arange(width)
    valid = idx < hi[:, None]
    idx = np.minimum(idx, wave.size - 1)
    profile = np.exp(-0.5 * ((wave[idx] - centre[:, None]) / sigma[:, None]) ** 2)
    profile *= (flux / (np.sqrt(2 * np.pi) * sigma))[:, None] * valid
    np.add.at(model, (np.broadcast_to(rows[:, None], idx.shape), idx), profile)


def observed_sigma(centre: np.ndarray, sigma_kms, lsf: float) -> np.ndarray:
    """Line sigma in Å: intrinsic velocity width and the instrument's line spread."""
    return np.hypot(centre * np.asarray(sigma_kms) / L.C_KMS, lsf)


def add_line(model, wave, z, cont, rest_centre, flux_rest, sigma_kms, lsf) -> None:
    """A line of rest-frame integrated flux ``flux_rest`` (continuum units × Å)."""
    centre = rest_centre * (1 + z)
    add_gaussians(model, wave, centre, observed_sigma(centre, sigma_kms, lsf), flux_rest * (1 + z))


def add_absorption(model, wave, z, cont, rest_centre, ew, sigma_kms, lsf) -> None:
    """An absorption line of rest equivalent width ``ew`` (Å), at most 85 % deep."""
    centre = rest_centre * (1 + z)
    sigma = observed_sigma(centre, sigma_kms, lsf)
    ew_obs = np.asarray(ew) * (1 + z)
    sigma = np.maximum(sigma, ew_obs / (np.sqrt(2 * np.pi) * 0.85))
    add_gaussians(model, wave, centre, sigma, -ew_obs * value_at(cont, wave, centre))


# -- quasars ----------------------------------------------------------------------------
def lyman_forest(rng: np.random.Generator, wave: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Transmission of the intergalactic medium: Lyα and Lyβ forests and the Lyman limit.

    Optical depth follows the mean τ_eff(z) ≈ 0.0025 (1+z)^3.7 of the Lyα forest, with
    lognormal fluctuations correlated over a few pixels.
    """
    rest = rest_wave(wave, z)
    field = rng.standard_normal(rest.shape)
    kernel = 4
    csum = np.cumsum(field, axis=1)
    field[:, kernel:] = (csum[:, kernel:] - csum[:, :-kernel]) / np.sqrt(kernel)
    fluctuation = np.exp(0.9 * field - 0.405)
    z_alpha = np.clip(wave / L.LY_ALPHA - 1, 0, None)
    z_beta = np.clip(wave / L.LY_BETA - 1, 0, None)
    tau = np.where(rest < L.LY_ALPHA, 1.4 * 0.0025 * (1 + z_alpha) ** 3.7, 0.0) * fluctuation
    tau += np.where(rest < L.LY_BETA, 0.16 * 1.4 * 0.0025 * (1 + z_beta) ** 3.7, 0.0) * fluctuation
    limit = rng.uniform(1.0, 4.0, z.size)[:, None]
    tau += np.where(rest < L.LYMAN_LIMIT, limit * (rest / L.LYMAN_LIMIT) ** 3, 0.0)
    return np.exp(-tau)


def quasar(rng: np.random.Generator, wave: np.ndarray, z: np.ndarray, lsf: float) -> np.ndarray:
    """Power-law continuum, broad emission lines at typical strengths, Lyα forest."""
    n = z.size
    rest = rest_wave(wave, z)
    slope = rng.normal(-1.5, 0.3, n)  # f_λ ∝ λ^slope (α_ν ≈ -0.5)
    cont = (rest / 3000.0) ** slope[:, None]
    bump = rng.uniform(0.05, 0.25, n)[:, None]  # Balmer continuum + Fe II pseudo-continuum
    cont *= 1.0 + bump * np.exp(-0.5 * ((rest - 2900.0) / 450.0) ** 2)
    model = cont.copy()
    strength = 10 ** rng.normal(0.0, 0.15, n)  # Baldwin-effect scatter, common to all lines
    breadth = 10 ** rng.normal(0.0, 0.1, n)
    for centre, ew, fwhm in L.QSO_BROAD:
        ew_row = ew * strength * 10 ** rng.normal(0.0, 0.08, n)
        flux = ew_row * value_at(cont, wave, centre * (1 + z))
        add_line(model, wave, z, cont, centre, flux, fwhm / 2.3548 * breadth, lsf)
    narrow = 10 ** rng.normal(0.0, 0.2, n)
    for centre, ew in ((L.OIII_5007, 12.0), (L.OIII_4959, 12.0 / L.OIII_RATIO), (L.OII_3729, 2.0)):
        flux = ew * narrow * value_at(cont, wave, centre * (1 + z))
        add_line(model, wave, z, cont, centre, flux, 200.0, lsf)
    return model * lyman_forest(rng, wave, z)


def bal_troughs(
    rng: np.random.Generator, wave: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Transmission of broad absorption-line outflows, and which rows are LoBALs.

    Troughs sit blueward of C IV, Si IV, N V and Lyα (and Mg II, Al III for LoBALs) at the
    same outflow velocities for every ion, thousands of km/s wide.
    """
    n = z.size
    rest = rest_wave(wave, z)
    v_min = rng.uniform(1000.0, 9000.0, n)[:, None]
    v_width = rng.uniform(2500.0, 12000.0, n)[:, None]
    depth = rng.uniform(0.55, 0.95, n)[:, None]
    lobal = rng.random(n) < 0.3
    transmission = np.ones_like(rest)
    ions = [(L.CIV, 1.0), (L.SIIV, 0.8), (L.NV, 0.9), (L.LY_ALPHA, 0.6)]
    for centre, scale in ions + [(L.ALIII, 0.6), (L.MGII, 0.7)]:
        velocity = L.C_KMS * (centre - rest) / centre  # outflow velocity that absorbs here
        edge = 600.0
        inside = _sigmoid((velocity - v_min) / edge) * _sigmoid((v_min + v_width - velocity) / edge)
        weight = np.ones((n, 1)) if (centre, scale) in ions else lobal[:, None].astype(float)
        transmission *= 1.0 - depth * scale * inside * weight
    return transmission, lobal


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


# -- galaxies ---------------------------------------------------------------------------
def passive_galaxy(
    rng: np.random.Generator, wave: np.ndarray, z: np.ndarray, lsf: float
) -> np.ndarray:
    """Old stellar population: red continuum, strong 4000 Å break, metal and Balmer absorption."""
    n = z.size
    rest = rest_wave(wave, z)
    cont = planck(rest, rng.uniform(4300.0, 5200.0, n))
    cont *= break_4000(rest, rng.uniform(1.6, 2.2, n))
    cont *= np.where(rest < 3000.0, (np.minimum(rest, 3000.0) / 3000.0) ** 2.5, 1.0)
    model = cont.copy()
    dispersion = rng.uniform(150.0, 300.0, n)
    scale = rng.uniform(0.8, 1.2, n)
    absorption = (
        (L.CAII_K, 8.0),
        (L.CAII_H, 7.0),
        (L.H_DELTA, 1.5),
        (L.G_BAND, 5.0),
        (L.H_GAMMA, 1.5),
        (L.H_BETA, 1.8),
        (L.MG_B, 5.0),
        (L.FE_5270, 2.5),
        (L.FE_5335, 2.0),
        (L.NA_D, 3.0),
        (L.H_ALPHA, 1.2),
        *((c, ew) for c, ew in zip(L.CA_TRIPLET, (1.2, 3.0, 2.5), strict=True)),
    )
    for centre, ew in absorption:
        add_absorption(model, wave, z, cont, centre, ew * scale, dispersion, lsf)
    oii = np.where(rng.random(n) < 0.4, rng.uniform(0.5, 4.0, n), 0.0)  # some have a little gas
    for centre, share in ((L.OII_3726, 0.45), (L.OII_3729, 0.55)):
        flux = oii * share * value_at(cont, wave, L.OII_3729 * (1 + z))
        add_line(model, wave, z, cont, centre, flux, 150.0, lsf)
    return model


def bpt_star_forming(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """log([N II]6583/Hα), log([O III]5007/Hβ) below the Kauffmann et al. (2003) line."""
    x = rng.uniform(-1.4, -0.45, n)
    y = 0.61 / (x - 0.05) + 1.3 - np.abs(rng.normal(0.15, 0.1, n))
    return x, y


def star_forming_galaxy(
    rng: np.random.Generator,
    wave: np.ndarray,
    z: np.ndarray,
    lsf: float,
    *,
    ew_halpha: np.ndarray | None = None,
    log_nii_ha: np.ndarray | None = None,
    log_oiii_hb: np.ndarray | None = None,
    ha_hb: np.ndarray | None = None,
    oiii_ratio: np.ndarray | None = None,
    nii_ratio: np.ndarray | None = None,
) -> np.ndarray:
    """Young stellar continuum with dust, Balmer absorption, and nebular emission lines.

    Line ratios obey atomic physics and photoionisation by young stars: Case B Balmer
    decrement reddened by dust, [O III] and [N II] doublets at fixed ratios, [N II]/Hα and
    [O III]/Hβ on the star-forming BPT sequence. Keyword arguments override those draws
    (the anomaly classes use them to break the rules).
    """
    n = z.size
    rest = rest_wave(wave, z)
    ebv = rng.uniform(0.0, 0.35, n)
    cont = (rest / 5500.0) ** rng.uniform(-2.2, -0.8, n)[:, None]
    cont *= break_4000(rest, rng.uniform(1.05, 1.35, n))
    cont *= np.where(rest < L.BALMER_LIMIT, rng.uniform(0.8, 0.95, n)[:, None], 1.0)
    cont *= 10 ** (
        -0.4 * 0.44 * ebv[:, None] * (calzetti(rest) - calzetti(np.full((1, 1), 5500.0)))
    )
    model = cont.copy()
    for centre, ew in ((L.H_ALPHA, 2.5), (L.H_BETA, 3.5), (L.H_GAMMA, 3.5), (L.H_DELTA, 4.0)):
        add_absorption(model, wave, z, cont, centre, ew * rng.uniform(0.6, 1.4, n), 700.0, lsf)

    ew_ha = ew_halpha if ew_halpha is not None else 10 ** rng.normal(1.6, 0.3, n)
    halpha = ew_ha * value_at(cont, wave, L.H_ALPHA * (1 + z))
    if np.any(halpha == 0):  # Hα off the grid: scale lines from the continuum at Hβ
        at_hb = value_at(cont, wave, L.H_BETA * (1 + z))
        halpha = np.where(halpha == 0, ew_ha * 0.7 * np.where(at_hb > 0, at_hb, 1.0), halpha)
    reddening = 10 ** (
        0.4
        * (ebv / 0.44)
        * (calzetti(np.full((1, 1), L.H_BETA)) - calzetti(np.full((1, 1), L.H_ALPHA)))[0, 0]
    )
    decrement = ha_hb if ha_hb is not None else L.CASE_B_HA_HB * reddening
    hbeta = halpha / decrement
    x, y = bpt_star_forming(rng, n)
    x = log_nii_ha if log_nii_ha is not None else x
    y = log_oiii_hb if log_oiii_hb is not None else y
    oiii = hbeta * 10**y
    nii = halpha * 10**x
    oii = hbeta * 10 ** rng.uniform(0.0, 0.6, n)
    oii_split = rng.uniform(1.0, 1.5, n)  # 3729/3726, density-sensitive
    sii = halpha * rng.uniform(0.15, 0.4, n)
    sii_split = rng.uniform(1.0, 1.45, n)  # 6716/6731
    oiii_div = oiii_ratio if oiii_ratio is not None else L.OIII_RATIO
    nii_div = nii_ratio if nii_ratio is not None else L.NII_RATIO
    emission = (
        (L.H_ALPHA, halpha),
        (L.H_BETA, hbeta),
        (L.H_GAMMA, hbeta * L.CASE_B_HG_HB),
        (L.H_DELTA, hbeta * L.CASE_B_HD_HB),
        (L.OIII_5007, oiii),
        (L.OIII_4959, oiii / oiii_div),
        (L.NII_6583, nii),
        (L.NII_6548, nii / nii_div),
        (L.OII_3729, oii * oii_split / (1 + oii_split)),
        (L.OII_3726, oii / (1 + oii_split)),
        (L.SII_6716, sii * sii_split / (1 + sii_split)),
        (L.SII_6731, sii / (1 + sii_split)),
        (L.NEIII_3869, oiii * 0.07),
        (L.HEI_5876, hbeta * 0.11),
    )
    dispersion = rng.uniform(40.0, 120.0, n)
    for centre, flux in emission:
        add_line(model, wave, z, cont, centre, flux, dispersion, lsf)
    return model


# -- stars ------------------------------------------------------------------------------
STAR_TYPES = {
    # type: (T range K, Balmer EW, Balmer sigma Å, Balmer jump, metal-line scale)
    "A": ((7500.0, 10000.0), 12.0, 14.0, 0.45, 0.15),
    "F": ((6000.0, 7500.0), 6.0, 7.0, 0.25, 0.45),
    "G": ((5200.0, 6000.0), 3.0, 4.0, 0.1, 0.8),
    "K": ((3900.0, 5200.0), 1.5, 3.0, 0.0, 1.2),
    "M": ((2800.0, 3900.0), 0.5, 2.0, 0.0, 1.0),
}
METAL_LINES = (
    (L.CAII_K, 10.0),
    (L.CAII_H, 8.0),
    (L.G_BAND, 5.0),
    (L.MG_B, 6.0),
    (L.FE_5270, 3.0),
    (L.NA_D, 4.0),
    *((c, ew) for c, ew in zip(L.CA_TRIPLET, (1.5, 3.5, 3.0), strict=True)),
)


def star(
    rng: np.random.Generator, wave: np.ndarray, z: np.ndarray, lsf: float, kinds: np.ndarray
) -> np.ndarray:
    """Stars of spectral types A, F, G, K, M (``kinds``): blackbody, Balmer, metals, TiO bands."""
    n = z.size
    rest = rest_wave(wave, z)
    temperature = np.empty(n)
    for kind, ((lo, hi), *_) in STAR_TYPES.items():
        chosen = kinds == kind
        temperature[chosen] = rng.uniform(lo, hi, chosen.sum())
    cont = planck(rest, temperature)
    jump = np.array([STAR_TYPES[k][3] for k in kinds])[:, None]
    cont *= np.where(rest < L.BALMER_LIMIT, 1.0 - jump, 1.0)
    model = cont.copy()
    balmer_ew = np.array([STAR_TYPES[k][1] for k in kinds]) * rng.uniform(0.8, 1.2, n)
    balmer_sigma = np.array([STAR_TYPES[k][2] for k in kinds])
    for i, centre in enumerate(L.BALMER_SERIES):
        ew = balmer_ew * (0.85**i)
        add_absorption(model, wave, z, cont, centre, ew, balmer_sigma / centre * L.C_KMS, lsf)
    metals = np.array([STAR_TYPES[k][4] for k in kinds]) * rng.uniform(0.8, 1.2, n)
    for centre, ew in METAL_LINES:
        add_absorption(model, wave, z, cont, centre, ew * metals, 20.0, lsf)
    cool = kinds == "M"
    if cool.any():
        depth = (
            np.clip((3900.0 - temperature) / 1100.0, 0.0, 1.0)[:, None]
            * rng.uniform(0.35, 0.6, n)[:, None]
        )
        for head in L.TIO_HEADS:
            length = 180.0
            fade = np.clip(1.0 - (rest - head) / length, 0.0, 1.0) * (rest >= head)
            model *= np.where(cool[:, None], 1.0 - depth * fade, 1.0)
    return model


def white_dwarf(
    rng: np.random.Generator, wave: np.ndarray, z: np.ndarray, lsf: float
) -> np.ndarray:
    """A hydrogen (DA) white dwarf: hot blackbody, very broad (pressure-broadened) Balmer lines."""
    n = z.size
    rest = rest_wave(wave, z)
    cont = planck(rest, rng.uniform(12000.0, 30000.0, n))
    model = cont.copy()
    width = rng.uniform(25.0, 45.0, n)
    for i, centre in enumerate(L.BALMER_SERIES[:6]):
        add_absorption(
            model, wave, z, cont, centre, width * 1.1 * 0.9**i, width / centre * L.C_KMS, lsf
        )
    return model
