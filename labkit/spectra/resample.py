"""Flux-conserving resampling of flux and inverse variance onto new pixel edges.

Each output pixel gets the mean flux density of the good input pixels it overlaps, weighted
by overlap. Its variance is propagated exactly for independent input pixels:
var_out = Σ (overlapᵢ² varᵢ) / (Σ overlapᵢ)². Integrals come from cumulative sums over the
input pixels, so the cost is O(P + M) per spectrum whatever the ratio of pixel sizes. Only
the output pixels a spectrum can reach are computed (a redshifted spectrum covers part of a
wide rest-frame grid), the rest are masked.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from labkit.spectra.grids import pixel_edges, positions

# An output pixel less than this fraction covered by good input pixels is masked.
MIN_COVERAGE = 0.5
# Temporaries one block of rows may take: cache-sized (64 MB ran 1.6x slower).
WORK_BYTES = 8 * 2**20
BYTES_PER_PIXEL = 80  # float64 temporaries per (row, input + output pixel)


def resample(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    edges_out: np.ndarray,
    scale: np.ndarray | None = None,
    min_coverage: float = MIN_COVERAGE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample N spectra on ``wave`` (P,) onto pixels with edges ``edges_out`` (M+1,).

    ``scale`` (N,) multiplies the output edges per spectrum: with ``1 + z`` and rest-frame
    edges this de-redshifts. Returns float64 flux and ivar and a bool mask, each (N, M);
    masked output pixels have flux 0 and ivar 0.
    """
    first, _, blocks = resample_windows(wave, flux, ivar, mask, edges_out, scale, min_coverage)
    shape = (flux.shape[0], edges_out.size - 1)
    flux_out, ivar_out, mask_out = np.zeros(shape), np.zeros(shape), np.ones(shape, dtype=bool)
    for rows, flux_w, ivar_w, ok in blocks:
        place(first[rows], flux_w, flux_out[rows])
        place(first[rows], ivar_w, ivar_out[rows])
        place(first[rows], ~ok, mask_out[rows])
    return flux_out, ivar_out, mask_out


def place(first: np.ndarray, windows: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Put each row's window into ``out`` at its first pixel; returns ``out``."""
    width = windows.shape[1]
    if width == out.shape[1]:
        out[...] = windows
        return out
    for row, start in enumerate(first):
        out[row, start : start + width] = windows[row]
    return out


def resample_windows(
    wave: np.ndarray,
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    edges_out: np.ndarray,
    scale: np.ndarray | None = None,
    min_coverage: float = MIN_COVERAGE,
) -> tuple[np.ndarray, int, Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]]:
    """Like ``resample``, for only the output pixels each spectrum can reach.

    Returns ``first`` (N,), the first output pixel of each row's window, the window width W
    (the same for every row), and the rows in blocks whose temporaries fit WORK_BYTES:
    ``(rows, flux, ivar, ok)``, each (rows, W). The caller keeps what it needs of a block (in
    its own dtype) before asking for the next, so no float64 array of all rows is ever made:
    large fresh allocations are slow where each new page faults (they ran 15-40 % slower).
    """
    n, m = flux.shape[0], edges_out.size - 1
    scale = np.ones(n) if scale is None else np.asarray(scale, dtype=np.float64)
    edges_in = pixel_edges(wave)
    first = np.searchsorted(edges_out, edges_in[0] / scale, side="right") - 1
    last = np.searchsorted(edges_out, edges_in[-1] / scale, side="left")
    first = np.clip(first, 0, m - 1)
    width = int(np.clip(np.max(last - first, initial=1), 1, m))
    if width > 0.8 * m:  # not worth the bookkeeping
        first[:] = 0
        width = m
    first = np.minimum(first, m - width)
    rows = max(1, WORK_BYTES // ((wave.size + width) * BYTES_PER_PIXEL))

    def blocks() -> Iterator[tuple[slice, np.ndarray, np.ndarray, np.ndarray]]:
        for start in range(0, n, rows):
            span = slice(start, start + rows)
            window = edges_out[first[span, None] + np.arange(width + 1)]
            yield (
                span,
                *_resample_rows(
                    edges_in,
                    wave,
                    flux[span],
                    ivar[span],
                    mask[span],
                    window,
                    scale[span],
                    min_coverage,
                ),
            )

    return first, width, blocks()


def _resample_rows(edges_in, wave, flux, ivar, mask, edges_out, scale, min_coverage):
    """The work of ``resample`` on per-row output edges (N, W+1); returns flux, ivar, ok."""
    n, p = flux.shape
    widths = np.diff(edges_in)
    good = ~mask & (ivar > 0)
    # per input pixel, after a leading 0 column: flux integral, good width, variance of the
    # flux integral; cumulative sums of these run in place
    flux_w, good_w, var_w = (np.zeros((n, p + 1)) for _ in range(3))
    np.multiply(flux, widths, out=flux_w[:, 1:], where=good)
    np.multiply(good, widths, out=good_w[:, 1:])
    np.divide(widths * widths, ivar, out=var_w[:, 1:], where=good)

    pos = positions(wave, edges_out, scale)
    pixel = pos.astype(np.int64)
    np.minimum(pixel, p - 1, out=pixel)
    frac = pos - pixel
    at = pixel + (np.arange(n) * (p + 1))[:, None]  # flat index of the edge's pixel's left edge
    at_next = at + 1

    def to_edges(per_pixel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integral from the grid's start to each edge, and the edge pixel's own value."""
        flat = per_pixel.ravel()
        own = flat[at_next]
        np.cumsum(per_pixel, axis=1, out=per_pixel)
        integral = flat[at]
        integral += frac * own
        return integral, own

    flux_sum = np.diff(to_edges(flux_w)[0], axis=1)
    cover = np.diff(to_edges(good_w)[0], axis=1)
    # variance: the linear integral counts a partly covered pixel as overlap·width·var;
    # exactly it is overlap²·var, so subtract frac(1-frac)·width²·var at each edge
    linear, own = to_edges(var_w)
    excess = frac * (1 - frac)
    excess *= own
    var_sum = np.diff(linear, axis=1)
    var_sum -= excess[:, :-1]
    var_sum -= excess[:, 1:]
    bin_width = np.diff(edges_out, axis=1) * scale[:, None]
    if bin_width.min() < widths.max():  # an output pixel may sit inside one input pixel
        same = pixel[:, :-1] == pixel[:, 1:]
        if same.any():
            inside = (frac[:, 1:] - frac[:, :-1]) ** 2 * own[:, :-1]
            var_sum = np.where(same, inside, var_sum)

    ok = cover >= min_coverage * bin_width
    ok &= var_sum > 0
    bad = ~ok
    with np.errstate(divide="ignore", invalid="ignore"):
        flux_out = np.divide(flux_sum, cover, out=flux_sum)
        ivar_out = np.multiply(cover, cover, out=cover)
        ivar_out /= var_sum
    flux_out[bad] = 0.0
    ivar_out[bad] = 0.0
    return flux_out, ivar_out, ok
