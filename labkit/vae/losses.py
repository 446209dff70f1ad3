"""The VAE objective: an ivar-weighted Gaussian likelihood plus a (warmed-up) KL term.

Masked pixels carry weight 0, so they add nothing to the loss or its gradient. Losses are
divided by the number of usable pixels, which keeps the learning rate meaningful whatever the
grid size, batch size or masked fraction.
"""

from __future__ import annotations

import torch


def chi2_per_spectrum(
    recon: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Σ ivar (flux − model)² over each spectrum's usable pixels."""
    return (weight * (flux - recon) ** 2).sum(dim=1)


def kl_per_spectrum(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, 1)) for a diagonal Gaussian posterior."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def negative_elbo(
    recon: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    flux: torch.Tensor,
    weight: torch.Tensor,
    kl_weight: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss summed over the batch, usable pixel count); loss / count is the per-pixel value."""
    nll = 0.5 * chi2_per_spectrum(recon, flux, weight).sum()
    kl = kl_per_spectrum(mu, logvar).sum()
    pixels = (weight > 0).sum()
    return nll + kl_weight * kl, pixels


def kl_schedule(epoch: int, warmup: int, weight: float) -> float:
    """KL weight for 1-based ``epoch``: a linear ramp over ``warmup`` epochs, then ``weight``."""
    if warmup <= 0:
        return weight
    return weight * min(1.0, epoch / warmup)
