"""Spectral VAE training: speed against a plain PyTorch loop, quality against weighted PCA.

Metrics (keys fixed by the issue):
- ``throughput_ratio_vs_torch``: labkit in-process training spectra/s ÷ a plain PyTorch loop
  over the same model, data and batch size written here (target >= 0.9);
- ``spectra_per_s``: labkit in-process training throughput;
- ``ray_2_worker_speedup``: in-process epoch time ÷ epoch time with Ray Train on 2 workers;
- ``chi2_vae`` / ``chi2_pca``: held-out reconstruction χ² per usable pixel of the VAE at latent
  16, latents fitted to convergence (``chi2_vae_scoring_fit``: with the one step scores use),
  and of an inverse-variance-weighted PCA with 16 components (target: VAE lower);
- ``auc_vae`` / ``auc_pca``: anomaly ROC AUC on the mock's ground truth, VAE ``anomaly_score``
  against the PCA reconstruction error (target: VAE >= 0.95 and above PCA);
- ``score_spectra_per_s``: ``anomaly_score`` throughput on the held-out spectra;
- ``score_cost_ratio``: scoring seconds per spectrum ÷ in-process training seconds per spectrum
  per epoch, both measured in this run with the same threads (target <= 5).

The quality run uses ``TrainConfig()`` defaults on ~10k spectra (``train_seconds`` must stay
under 180 s on 2 cores). ``--quick`` keeps the data at 10k training spectra and shortens the
throughput and Ray measurements.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from report import print_table, write_results  # noqa: E402

import labkit  # noqa: E402
from labkit.spectra import mock_survey, preprocess  # noqa: E402
from labkit.spectra.preprocess import rest_grid  # noqa: E402
from labkit.vae import SpectrumVAE, TrainConfig, train  # noqa: E402
from labkit.vae.data import training_arrays  # noqa: E402
from labkit.vae.losses import negative_elbo  # noqa: E402
from labkit.vae.model import REFINE_STEPS  # noqa: E402

GRID = (900.0, 9800.0, 5.5e-4)  # rest-frame Å range and dex per pixel: ~1900 pixels
CONVERGED_STEPS = 10  # Gauss-Newton steps after which the latent fit no longer moves


# -- baselines -------------------------------------------------------------------------------
def weighted_pca(flux: np.ndarray, weight: np.ndarray, k: int, iterations: int = 8):
    """Mean and k components minimising Σ ivar (flux − model)² (EM-PCA with weights).

    Alternates weighted least squares for every spectrum's coefficients and for every
    pixel's component values, starting from a plain SVD of mean-filled data.
    """
    total = weight.sum(axis=0)
    mean = np.divide(
        (weight * flux).sum(axis=0), total, out=np.zeros(flux.shape[1]), where=total > 0
    )
    filled = np.where(weight > 0, flux - mean, 0.0)
    _, _, vt = np.linalg.svd(filled[:: max(1, len(filled) // 3000)], full_matrices=False)
    basis = vt[:k].T.astype(np.float64)  # (P, k)
    ridge = 1e-6 * np.eye(k)
    for _ in range(iterations):
        coeffs = pca_coefficients(flux, weight, mean, basis)
        # per pixel: (Σ_n w c cᵀ) v = Σ_n w c (x − μ)
        outer = (coeffs[:, :, None] * coeffs[:, None, :]).reshape(len(coeffs), k * k)
        lhs = (weight.T @ outer).reshape(-1, k, k) + ridge
        rhs = np.einsum("np,nk->pk", weight * filled, coeffs)
        basis = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        basis, _ = np.linalg.qr(basis)
    return mean, basis


def pca_coefficients(flux, weight, mean, basis) -> np.ndarray:
    """Weighted least-squares coefficients of every spectrum on ``basis``."""
    resid = np.where(weight > 0, flux - mean, 0.0)
    k = basis.shape[1]
    outer = (basis[:, :, None] * basis[:, None, :]).reshape(len(basis), k * k)
    lhs = (weight.astype(np.float64) @ outer).reshape(-1, k, k) + 1e-6 * np.eye(k)
    rhs = (weight * resid) @ basis
    return np.linalg.solve(lhs, rhs[..., None])[..., 0]


def pca_chi2_per_pixel(flux, weight, mean, basis) -> np.ndarray:
    model = mean + pca_coefficients(flux, weight, mean, basis) @ basis.T
    pixels = (weight > 0).sum(axis=1)
    return (weight * (flux - model) ** 2).sum(axis=1) / np.maximum(pixels, 1)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a random anomaly scores above a random normal spectrum (ties: 1/2)."""
    keep = np.isfinite(scores)
    scores, truth = scores[keep], truth[keep].astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    start = 0
    for stop in range(1, len(scores) + 1):  # average ranks over ties
        if stop == len(scores) or sorted_scores[stop] != sorted_scores[start]:
            ranks[order[start:stop]] = 0.5 * (start + stop - 1) + 1
            start = stop
    n_pos, n_neg = truth.sum(), (~truth).sum()
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def raw_torch_loop(flux, weight, config: TrainConfig, wave, epochs: int) -> float:
    """The same model and objective in a plain PyTorch loop; spectra per second after epoch 1."""
    device = torch.device(config.resolved_device())
    torch.manual_seed(0)
    model = SpectrumVAE(wave, **config.architecture()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    flux_t, weight_t = torch.from_numpy(flux).to(device), torch.from_numpy(weight).to(device)
    started = None
    for epoch in range(epochs):
        if epoch == 1:
            _synchronize(device)
            started = time.perf_counter()
        for rows in torch.randperm(len(flux_t), device=device).split(config.batch_size):
            f, w = flux_t[rows], weight_t[rows]
            recon, mu, logvar = model(f, w)
            loss, pixels = negative_elbo(recon, mu, logvar, f, w, 1.0)
            optimizer.zero_grad()
            (loss / pixels).backward()
            optimizer.step()
    _synchronize(device)
    return len(flux) * (epochs - 1) / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- measurements --------------------------------------------------------------------------
def mock(n: int, seed: int, anomaly_fraction: float):
    grid = rest_grid(*GRID[:2], GRID[2])
    return preprocess(mock_survey(n, anomaly_fraction=anomaly_fraction, seed=seed), grid=grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter speed measurements")
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=3_000)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Train measurement")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    speed_epochs = 3 if args.quick else 6
    # checkpoints are hundreds of MB: keep them out of the repository, gone at the end
    work = Path(tempfile.mkdtemp(prefix="labkit-train-bench-"))
    try:
        _measure(args, threads, speed_epochs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, threads: int, speed_epochs: int, work: Path) -> None:
    print(f"mock survey: {args.n_train} training + {args.n_test} test spectra, grid {GRID}")
    train_set = mock(args.n_train, seed=0, anomaly_fraction=0.01)
    test_set = mock(args.n_test, seed=1, anomaly_fraction=0.05)
    truth = np.asarray(test_set.meta["is_anomaly"], dtype=bool)
    test = training_arrays(test_set)
    normal = ~truth

    # quality with the defaults
    config = TrainConfig()
    started = time.perf_counter()
    result = train(train_set, config, cluster="in-process", checkpoint_dir=work / "quality")
    train_seconds = time.perf_counter() - started
    model = result.model
    # the model's own quality: χ² at the best fit its decoder allows (a converged latent fit,
    # as 100 Adam steps gave before); scores use the one-step fit they are timed with
    model.refine_steps = CONVERGED_STEPS
    chi2_vae = model.chi2_per_pixel(test, progress=False)
    model.refine_steps = REFINE_STEPS
    chi2_vae_scoring = model.chi2_per_pixel(test, progress=False)
    started = time.perf_counter()
    score_vae = model.anomaly_score(test, progress=False)
    score_rate = len(test) / (time.perf_counter() - started)
    arrays = training_arrays(train_set)
    mean, basis = weighted_pca(arrays.flux.astype(np.float64), arrays.weight, config.latent_dim)
    chi2_pca = pca_chi2_per_pixel(test.flux, test.weight, mean, basis)

    # speed: the same epochs through labkit and through a plain loop
    speed = config.replace(epochs=speed_epochs, patience=None, val_fraction=0.0)
    # steady state, checkpoints included: from the end of epoch 1 to the end of the last
    stamps: list[float] = []
    timed = train(
        train_set,
        speed,
        cluster="in-process",
        checkpoint_dir=work / "speed",
        progress=False,
        callback=lambda record: stamps.append(time.perf_counter()),
    )
    labkit_rate = args.n_train * (speed_epochs - 1) / (stamps[-1] - stamps[0])
    loop_rate = args.n_train * speed_epochs / sum(r["seconds"] for r in timed.history)
    raw_rate = raw_torch_loop(arrays.flux, arrays.weight, speed, arrays.wave, speed_epochs)

    metrics = {
        "throughput_ratio_vs_torch": labkit_rate / raw_rate,
        "spectra_per_s": labkit_rate,
        "epoch_loop_spectra_per_s": loop_rate,
        "raw_torch_spectra_per_s": raw_rate,
        "chi2_vae": float(np.nanmedian(chi2_vae[normal])),
        "chi2_pca": float(np.nanmedian(chi2_pca[normal])),
        "chi2_vae_mean": float(np.nanmean(chi2_vae[normal])),
        "chi2_vae_scoring_fit": float(np.nanmedian(chi2_vae_scoring[normal])),
        "chi2_pca_mean": float(np.nanmean(chi2_pca[normal])),
        "auc_vae": roc_auc(score_vae, truth),
        "auc_pca": roc_auc(chi2_pca, truth),
        "auc_vae_chi2_only": roc_auc(chi2_vae, truth),
        "score_spectra_per_s": score_rate,
        "score_cost_ratio": labkit_rate / score_rate,
        "train_seconds": train_seconds,
        "epochs_trained": len(result.history),
        "threads": threads,
        "device": config.resolved_device(),
    }
    if not args.no_ray:
        with labkit.connect(backend="ray", workers=2):
            ray_config = speed.replace(num_workers=2, threads=max(1, threads // 2))
            ray_result = train(train_set, ray_config, checkpoint_dir=work / "ray", progress=False)
        ray_epoch = np.median([r["seconds"] for r in ray_result.history])
        local_epoch = np.median([r["seconds"] for r in timed.history])
        metrics["ray_2_worker_speedup"] = float(local_epoch / ray_epoch)

    print_table(
        "spectral VAE training (labkit vs raw)",
        [
            ("training spectra/s", labkit_rate, raw_rate, ">= 0.9"),
            ("χ²/pixel held out (vs PCA)", metrics["chi2_vae"], metrics["chi2_pca"], "< 1"),
            ("anomaly AUC (vs PCA)", metrics["auc_vae"], metrics["auc_pca"], "> 1, VAE >= 0.95"),
            ("score s/spectrum (vs train)", 1 / score_rate, 1 / labkit_rate, "<= 5"),
        ],
    )
    write_results("train", args.quick, metrics)


if __name__ == "__main__":
    main()
