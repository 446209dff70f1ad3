"""``SpectrumVAE``: a variational autoencoder over rest-frame spectra on one log-λ grid.

The network works on standardised flux (per-pixel mean and spread of the training set, kept
as buffers), with masked pixels set to the mean, so a mask never leaks into the input. The
decoder returns flux in the input's units, which the ivar-weighted likelihood compares with
the data. Grid and architecture travel with every saved model, so a model can only be used
on, or resumed with, spectra on the grid it was trained on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit.errors import CheckpointError
from labkit.spectra.store import is_store
from labkit.vae.anomaly import TrainingPopulation, local_misfit
from labkit.vae.checkpoints import CheckpointStore, read_payload
from labkit.vae.data import TrainingArrays, training_arrays
from labkit.vae.losses import chi2_per_spectrum

FORMAT = "labkit.SpectrumVAE"
FORMAT_VERSION = 2
GRID_RTOL = 1e-6
LOGVAR_RANGE = (-12.0, 8.0)
# Gauss-Newton steps that refine latents before reconstructing (0: the encoder's guess alone);
# the first computes the decoder's Jacobian, later ones reuse its Hessian with a fresh gradient.
# One step costs ~4 training steps per spectrum; each further one about one more.
REFINE_STEPS = 1
REFINE_HALVINGS = 3  # times a step that does not lower the objective is halved before skipping it


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Standardised flux (N × P) → 2 × latent (posterior mean and log-variance).

    With ``see_mask`` the observed-pixel mask is a second input, so the encoder can tell a
    masked pixel (entered as the mean) from an observed one that happens to be average.
    """

    def __init__(self, n_pixels: int, hidden: Sequence[int], latent_dim: int, see_mask: bool):
        super().__init__()
        self.see_mask = see_mask
        self.body = _mlp([n_pixels * (2 if see_mask else 1), *hidden])
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        if self.see_mask:
            x = torch.cat([x, observed], dim=1)
        return self.head(self.body(x))


class ConvEncoder(nn.Module):
    """1-D convolutions over (standardised flux, observed-pixel mask), then a dense head.

    Strided convolutions see line shapes wherever they fall on the grid; the mask channel
    tells a masked pixel from one that happens to equal the mean.
    """

    POOLED = 16  # positions kept after adaptive pooling, whatever the grid length

    def __init__(
        self,
        n_pixels: int,
        channels: Sequence[int],
        kernel: int,
        hidden: Sequence[int],
        latent_dim: int,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = 2
        for n_out in channels:
            layers += [
                nn.Conv1d(n_in, n_out, kernel, stride=2, padding=kernel // 2),
                nn.LeakyReLU(0.1),
            ]
            n_in = n_out
        layers.append(nn.AdaptiveAvgPool1d(self.POOLED))
        self.conv = nn.Sequential(*layers)
        self.dense = _mlp([n_in * self.POOLED, *hidden])
        self.head = nn.Linear(hidden[-1], 2 * latent_dim)

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        features = self.conv(torch.stack([x, observed], dim=1)).flatten(1)
        return self.head(self.dense(features))


class SpectrumVAE(nn.Module):
    """Encoder, decoder and the training population's statistics for anomaly scores.

    Build one from a grid and an architecture (``TrainConfig.architecture()``), or get one from
    ``labkit.vae.train`` / ``SpectrumVAE.load``. ``encode``, ``reconstruct`` and
    ``anomaly_score`` take a ``Spectra`` on the model's grid.
    """

    def __init__(
        self,
        wave: np.ndarray | Sequence[float],
        latent_dim: int = 16,
        hidden: Sequence[int] = (512, 256),
        encoder: str = "mlp",
        conv_channels: Sequence[int] = (16, 32, 32),
        conv_kernel: int = 9,
        see_mask: bool = False,
    ):
        super().__init__()
        wave = np.asarray(wave, dtype=np.float64)
        n_pixels = wave.shape[0]
        self.architecture = {
            "latent_dim": int(latent_dim),
            "hidden": [int(h) for h in hidden],
            "encoder": encoder,
            "conv_channels": [int(c) for c in conv_channels],
            "conv_kernel": int(conv_kernel),
            "see_mask": bool(see_mask),
        }
        if encoder == "mlp":
            self.encoder = MLPEncoder(n_pixels, hidden, latent_dim, see_mask)
        elif encoder == "conv":
            self.encoder = ConvEncoder(n_pixels, conv_channels, conv_kernel, hidden, latent_dim)
        else:
            raise CheckpointError(f"unknown encoder kind {encoder!r} (mlp or conv)")
        self.decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(list(hidden))]), nn.Linear(hidden[0], n_pixels)
        )
        # a linear path next to the network: what PCA captures comes for free, the
        # hidden layers learn the curvature of the population beyond it
        self.decoder_linear = nn.Linear(latent_dim, n_pixels, bias=False)
        # and its mirror in the encoder: a linear projection onto the latent means
        self.encoder_linear = nn.Linear(n_pixels, latent_dim, bias=False)
        # a copy (torch.tensor): the grid may be a read-only view (a store's, one Ray shares),
        # which torch.as_tensor warns about sharing
        self.register_buffer("wave", torch.tensor(wave, dtype=torch.float64))
        self.register_buffer("flux_mean", torch.zeros(n_pixels))
        self.register_buffer("flux_std", torch.ones(n_pixels))
        self.population = TrainingPopulation(latent_dim, n_pixels)
        self.refine_steps = REFINE_STEPS

    # -- the network ---------------------------------------------------------------------
    @property
    def latent_dim(self) -> int:
        return self.architecture["latent_dim"]

    @property
    def n_pixels(self) -> int:
        return self.wave.shape[0]

    @property
    def device(self) -> torch.device:
        return self.flux_mean.device

    def set_flux_statistics(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.flux_mean.copy_(torch.as_tensor(mean))
        self.flux_std.copy_(torch.as_tensor(std))

    @torch.no_grad()
    def start_from_pca(self, flux: np.ndarray, weight: np.ndarray) -> None:
        """Start as probabilistic PCA of these (training) spectra; the networks add to it.

        The linear paths get the leading principal components of the standardised flux
        (masked pixels at the mean), scaled so that latents have unit variance, as the
        prior wants; the networks' output layers start at zero. Training then begins from
        what PCA achieves and the networks learn what lies beyond it.
        """
        mean, std = self.flux_mean.cpu().numpy(), self.flux_std.cpu().numpy()
        x = np.where(weight > 0, (flux - mean) / std, 0.0)
        _, singular, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
        k = min(self.latent_dim, len(singular))
        scale = np.maximum(singular[:k] / np.sqrt(max(len(x) - 1, 1)), 1e-6)
        decoder = np.zeros((self.n_pixels, self.latent_dim))
        decoder[:, :k] = vt[:k].T * scale
        encoder = np.zeros((self.latent_dim, self.n_pixels))
        encoder[:k] = vt[:k] / scale[:, None]
        self.decoder_linear.weight.copy_(torch.as_tensor(decoder))
        self.encoder_linear.weight.copy_(torch.as_tensor(encoder))
        self.decoder[-1].weight.zero_()
        self.decoder[-1].bias.zero_()
        head = self.encoder.head
        head.weight[: self.latent_dim].zero_()
        head.bias[: self.latent_dim].zero_()

    def linear_parameters(self) -> list[nn.Parameter]:
        """The weights of the linear (PCA-like) paths beside the networks."""
        return [self.encoder_linear.weight, self.decoder_linear.weight]

    def posterior(self, flux: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(mean, log-variance) of q(z | spectrum); masked pixels enter as the mean spectrum."""
        observed = (weight > 0).to(flux.dtype)
        x = (flux - self.flux_mean) / self.flux_std * observed
        out = self.encoder(x, observed)
        mu, logvar = out.chunk(2, dim=1)
        return mu + self.encoder_linear(x), logvar.clamp(*LOGVAR_RANGE)

    def decode_tensor(self, z: torch.Tensor) -> torch.Tensor:
        return self.flux_mean + self.flux_std * (self.decoder(z) + self.decoder_linear(z))

    def forward(
        self, flux: torch.Tensor, weight: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mu, logvar), sampling z with ``noise`` (standard normal) if given."""
        mu, logvar = self.posterior(flux, weight)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * noise
        return self.decode_tensor(z), mu, logvar

    # -- working on spectra --------------------------------------------------------------
    def _arrays(self, spectra: Any) -> TrainingArrays:
        arrays = spectra if isinstance(spectra, TrainingArrays) else training_arrays(spectra)
        self.check_grid(arrays.wave)
        return arrays

    def check_grid(self, wave: np.ndarray) -> None:
        """Raise ``CheckpointError`` when ``wave`` is not the grid this model was built on."""
        mine = self.wave.detach().cpu().numpy()
        wave = np.asarray(wave, dtype=np.float64)
        if wave.shape != mine.shape or not np.allclose(wave, mine, rtol=GRID_RTOL, atol=0):
            raise CheckpointError(
                f"grid mismatch: the model was trained on {_describe(mine)}, but these spectra "
                f"are on {_describe(wave)}; preprocess them onto the model's grid "
                "(labkit.spectra.preprocess(spectra, grid=model.wave.numpy()))"
            )

    def _batches(
        self, arrays: TrainingArrays, batch_size: int, progress: bool = False, desc: str = ""
    ):
        """(flux, weight) tensors per batch, with a progress bar over spectra if asked.

        Ctrl-C stops between batches (the bar closes, KeyboardInterrupt goes on up).
        """
        device = self.device
        with tqdm(total=len(arrays), desc=desc, unit="spectrum", disable=not progress) as bar:
            for start in range(0, len(arrays), batch_size):
                stop = start + batch_size
                flux = torch.from_numpy(arrays.flux[start:stop]).to(device)
                weight = torch.from_numpy(arrays.weight[start:stop]).to(device)
                yield flux, weight
                bar.update(len(flux))

    @torch.no_grad()
    def encode(self, spectra: Any, batch_size: int = 1024, progress: bool = True) -> np.ndarray:
        """Posterior means, N × latent_dim float32 (a store: chunk by chunk on the active
        cluster)."""
        if is_store(spectra):
            from labkit.vae.store_scoring import encode_store

            return encode_store(self, spectra, progress=progress)
        arrays = self._arrays(spectra)
        return self._encode(arrays, batch_size, progress)

    def _encode(
        self, arrays: TrainingArrays, batch_size: int = 1024, progress: bool = False
    ) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                batches = self._batches(arrays, batch_size, progress, "encode")
                parts = [self.posterior(f, w)[0].cpu() for f, w in batches]
        finally:
            self.train(was_training)
        return torch.cat(parts).numpy().astype(np.float32)

    @torch.no_grad()
    def decode(self, latents: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Model flux (N × P float32, on ``wave``) for latent vectors (N × latent_dim)."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise CheckpointError(
                f"decode needs an N x {self.latent_dim} array of latent vectors, got shape "
                f"{tuple(z.shape)}"
            )
        parts = [
            self.decode_tensor(z[i : i + batch_size].to(self.device)).cpu()
            for i in range(0, len(z), batch_size)
        ]
        return torch.cat(parts).numpy().astype(np.float32)

    @torch.no_grad()
    def reconstruct(
        self, spectra: Any, batch_size: int = 1024, progress: bool = True
    ) -> np.ndarray:
        """Model flux at each spectrum's best-fit latents (N × P float32)."""
        arrays = self._arrays(spectra)
        parts = []
        for flux, weight in self._batches(arrays, batch_size, progress, "reconstruct"):
            parts.append(self.decode_tensor(self.best_fit_latents(flux, weight)).cpu())
        return torch.cat(parts).numpy().astype(np.float32)

    @torch.no_grad()
    def chi2_per_pixel(
        self, spectra: Any, batch_size: int = 1024, progress: bool = True
    ) -> np.ndarray:
        """Reconstruction χ² per usable pixel of each spectrum (NaN for fully masked ones)."""
        arrays = self._arrays(spectra)
        return self._fit_statistics(arrays, batch_size, progress=progress, desc="χ²")[0]

    def best_fit_latents(
        self,
        flux: torch.Tensor,
        weight: torch.Tensor,
        steps: int | None = None,
        start: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Latents that fit each spectrum best: the posterior mean, refined by Gauss-Newton steps.

        The encoder's guess is one forward pass (amortised); ``steps`` steps on χ²/2 + |z|²/2
        per spectrum (the MAP under the prior, decoder fixed) close the gap between that guess
        and the best the decoder can do, as a PCA fit does for its basis. The first step solves
        (JᵀWJ + 1) δ = −∇ with J the decoder's P × latent Jacobian; later steps reuse that
        16 × 16 Hessian with a fresh gradient (a Jacobian costs ~16 gradients). A step that does
        not lower a spectrum's objective is halved, then skipped: it never rises. ``start``
        is the posterior mean when the caller has it already.
        """
        steps = self.refine_steps if steps is None else steps
        with torch.no_grad():
            z = self.posterior(flux, weight)[0] if start is None else start
            if steps <= 0:
                return z
            residual = flux - self.decode_tensor(z)
            best = 0.5 * (weight * residual**2).sum(dim=1) + 0.5 * z.pow(2).sum(dim=1)
            jac = self.decoder_jacobian(z, weight.sqrt())  # √W J
            eye = torch.eye(self.latent_dim, dtype=torch.float64, device=z.device)
            hessian = torch.linalg.cholesky((jac.transpose(1, 2) @ jac).double() + eye)
            # the gradient at the encoder's guess comes with the Jacobian: z − Jᵀ W r
            grad = z - (jac.transpose(1, 2) @ (weight.sqrt() * residual).unsqueeze(2)).squeeze(2)
            for index in range(steps):
                if index > 0:
                    with torch.enable_grad():
                        z_grad = z.clone().requires_grad_(True)
                        objective = self._map_objective(z_grad, flux, weight)
                        (grad,) = torch.autograd.grad(objective.sum(), z_grad)
                step = -torch.cholesky_solve(grad.double().unsqueeze(2), hessian).squeeze(2)
                z, best = self._line_search(z, step.to(z.dtype), best, flux, weight)
        return z

    def _map_objective(
        self, z: torch.Tensor, flux: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """χ²/2 + |z|²/2 per spectrum: what ``best_fit_latents`` minimises."""
        chi2 = chi2_per_spectrum(self.decode_tensor(z), flux, weight)
        return 0.5 * chi2 + 0.5 * z.pow(2).sum(dim=1)

    def _line_search(
        self,
        z: torch.Tensor,
        step: torch.Tensor,
        best: torch.Tensor,
        flux: torch.Tensor,
        weight: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Take ``step`` from ``z`` where it lowers the objective, else half of it, and so on."""
        pending = torch.ones_like(best, dtype=torch.bool)
        for _ in range(REFINE_HALVINGS + 1):
            candidate = z + step
            objective = self._map_objective(candidate, flux, weight)
            better = pending & (objective < best)
            z = torch.where(better[:, None], candidate, z)
            best = torch.where(better, objective, best)
            pending &= ~better
            if not pending.any():
                break
            step = 0.5 * step
        return z, best

    def decoder_jacobian(self, z: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """d decode / dz at each latent vector: N × P × latent_dim, rows times ``scale`` (N × P).

        Forward-mode through the decoder's Linear and LeakyReLU layers, plus the linear path.
        """
        hidden = z
        jac = torch.eye(self.latent_dim, dtype=z.dtype, device=z.device).expand(len(z), -1, -1)
        for layer in self.decoder.modules():
            if isinstance(layer, nn.Linear):
                hidden, jac = layer(hidden), layer.weight @ jac
            elif isinstance(layer, nn.LeakyReLU):
                slope = torch.where(hidden > 0, 1.0, layer.negative_slope)
                hidden, jac = layer(hidden), slope.unsqueeze(2) * jac
        rows = self.flux_std if scale is None else self.flux_std * scale
        return (jac + self.decoder_linear.weight) * rows.unsqueeze(-1)

    def _fit_statistics(
        self,
        arrays: TrainingArrays,
        batch_size: int = 1024,
        excess: torch.Tensor | None = None,
        latents_given: np.ndarray | None = None,
        progress: bool = False,
        desc: str = "",
        means: list[torch.Tensor] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per spectrum: χ²/pixel, χ²/pixel under the learned model-error floor, latents, and
        the worst local misfit under that floor (``local_misfit``).

        With ``excess`` (P,) given, its running sums of (residual² − noise variance) per pixel
        are accumulated into it (row 0: sums, row 1: counts) — how ``fit_population`` learns
        where the model typically misfits. ``latents_given`` skips the latent fit. ``progress``
        shows a bar over spectra. ``means`` collects each batch's posterior means (what
        ``encode`` gives), from the encoder pass the latent fit starts from anyway.
        """
        was_training = self.training
        self.eval()
        floor = self.population.model_variance
        chi2, chi2_floor, latents, local = [], [], [], []
        try:
            with torch.no_grad():
                batches = self._batches(arrays, batch_size, progress, desc)
                for batch, (flux, weight) in enumerate(batches):
                    if latents_given is None:
                        start = self.posterior(flux, weight)[0]
                        if means is not None:
                            means.append(start.cpu())
                        mu = self.best_fit_latents(flux, weight, start=start)
                    else:
                        given = latents_given[batch * batch_size : (batch + 1) * batch_size]
                        mu = torch.from_numpy(given).to(self.device)
                    recon = self.decode_tensor(mu)
                    observed = weight > 0
                    pixels = observed.sum(dim=1).to(flux.dtype)
                    residual2 = (flux - recon) ** 2
                    noise_var = torch.where(observed, 1.0 / weight.clamp(min=1e-30), 0.0)
                    chi2.append(((weight * residual2).sum(dim=1) / pixels).cpu())
                    floored = torch.where(observed, residual2 / (noise_var + floor), 0.0)
                    chi2_floor.append((floored.sum(dim=1) / pixels).cpu())
                    local.append(local_misfit(floored, observed).cpu())
                    latents.append(mu.cpu())
                    if excess is not None:
                        excess[0] += torch.where(observed, residual2 - noise_var, 0.0).sum(0).cpu()
                        excess[1] += observed.sum(0).cpu()
        finally:
            self.train(was_training)
        return tuple(torch.cat(parts).numpy() for parts in (chi2, chi2_floor, latents, local))

    @torch.no_grad()
    def anomaly_score(
        self, spectra: Any, batch_size: int = 1024, progress: bool = True
    ) -> np.ndarray:
        """One float per spectrum, higher = stranger (NaN for spectra with no usable pixel).

        Combines how badly the model reconstructs a spectrum, how badly it misses its worst
        stretch of pixels, and how unusual its latent vector is among the training spectra,
        each measured in units of the training population's own spread. The reconstruction
        term is χ² per usable pixel with each
        pixel's variance raised by how much the model misfits that pixel for typical training
        spectra, so pixels the model never gets right (strong-line cores) do not drown out
        misfits where the population is well understood. Nothing here knows the kinds of
        anomaly a survey holds: anything the learned population does not explain scores high.
        A store is scored chunk by chunk on the active cluster.
        """
        if is_store(spectra):
            from labkit.vae.store_scoring import score_store

            return score_store(self, spectra, progress=progress)
        arrays = self._arrays(spectra)
        stats = self._fit_statistics(arrays, batch_size, progress=progress, desc="anomaly score")
        _, chi2_floor, latents, local = stats
        return self.population.score(chi2_floor, latents, local)

    @torch.no_grad()
    def encode_and_score(
        self, spectra: Any, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """``encode(spectra)`` and ``anomaly_score(spectra)`` of in-memory spectra in one pass."""
        arrays = self._arrays(spectra)
        means: list[torch.Tensor] = []
        _, chi2_floor, latents, local = self._fit_statistics(arrays, batch_size, means=means)
        encoded = torch.cat(means).numpy().astype(np.float32)
        return encoded, self.population.score(chi2_floor, latents, local)

    def fit_population(self, spectra: Any, batch_size: int = 1024) -> None:
        """Learn from training spectra what anomaly scores compare with.

        Two passes over the same best-fit latents: the per-pixel model-error floor first,
        then the spread of floored χ² and the distribution of latent vectors.
        """
        arrays = self._arrays(spectra)
        excess = torch.zeros(2, self.n_pixels, dtype=torch.float64)
        self.population.model_variance.zero_()
        latents = self._fit_statistics(arrays, batch_size, excess=excess)[2]
        floor = (excess[0] / excess[1].clamp(min=1)).clamp(min=0)
        self.population.model_variance.copy_(floor.to(self.population.model_variance))
        _, chi2_floor, _, local = self._fit_statistics(arrays, batch_size, latents_given=latents)
        self.population.fit(chi2_floor, latents, local)

    # -- persistence ---------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "architecture": dict(self.architecture),
            "wave": self.wave.detach().cpu().numpy().tolist(),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, grid, architecture and population statistics to one file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        torch.save(self.to_payload(), partial)
        os.replace(partial, path)
        return path

    @classmethod
    def from_payload(cls, payload: Any, source: str = "checkpoint") -> SpectrumVAE:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not a labkit SpectrumVAE checkpoint")
        if payload.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{source} has checkpoint format version {payload.get('version')}, this labkit "
                f"reads version {FORMAT_VERSION}"
            )
        model = cls(payload["wave"], **payload["architecture"])
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(
                f"{source} does not match its stored architecture: {exc}"
            ) from None
        return model

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str = "cpu") -> SpectrumVAE:
        """Load a saved model: a ``.pt`` file, or a training ``checkpoint_dir``.

        A checkpoint directory gives its final model, or the best epoch so far when the run
        was interrupted.
        """
        path = Path(path)
        if path.is_dir():
            payload, source = CheckpointStore(path).model_payload(map_location)
            return cls.from_payload(payload, source).to(map_location)
        payload = read_payload(path, map_location)
        if isinstance(payload, dict) and "model" in payload and "format" not in payload:
            payload = payload["model"]  # a per-epoch training checkpoint
        return cls.from_payload(payload, str(path)).to(map_location)

    def check_compatible(self, architecture: dict[str, Any], wave: np.ndarray) -> None:
        """Raise ``CheckpointError`` unless this model has ``architecture`` on grid ``wave``."""
        differing = [
            f"{key}: checkpoint {self.architecture.get(key)!r}, requested {value!r}"
            for key, value in architecture.items()
            if self.architecture.get(key) != value
        ]
        if differing:
            raise CheckpointError(
                "the checkpoint was made with a different architecture ("
                + "; ".join(differing)
                + "); train afresh (resume=False) or use the checkpoint's settings"
            )
        self.check_grid(wave)


def _describe(wave: np.ndarray) -> str:
    if wave.ndim != 1 or wave.size == 0:
        return f"an array of shape {wave.shape}"
    return f"{wave.size} pixels from {wave[0]:.1f} to {wave[-1]:.1f} Å"
