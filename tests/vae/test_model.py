"""SpectrumVAE on its own: the masked likelihood, encode/decode shapes, save/load, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit.errors import CheckpointError
from labkit.vae import SpectrumVAE, TrainConfig
from labkit.vae.data import pixel_statistics, training_arrays
from labkit.vae.losses import negative_elbo


def _model(spectra, **arch) -> SpectrumVAE:
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=4, hidden=(32, 16), **arch)
    model = SpectrumVAE(spectra.wave, **config.architecture())
    model.set_flux_statistics(*pixel_statistics(training_arrays(spectra)))
    return model


def _loss_and_grads(model, spectra):
    arrays = training_arrays(spectra)
    flux, weight = torch.from_numpy(arrays.flux), torch.from_numpy(arrays.weight)
    noise = torch.randn(len(flux), model.latent_dim, generator=torch.Generator().manual_seed(1))
    model.zero_grad()
    recon, mu, logvar = model(flux, weight, noise)
    loss, pixels = negative_elbo(recon, mu, logvar, flux, weight, 1.0)
    (loss / pixels).backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_masked_pixels_do_not_influence_the_loss(rest_spectra, encoder):
    spectra = rest_spectra[:40].copy()
    rng = np.random.default_rng(3)
    hide = rng.random(spectra.flux.shape) < 0.2
    spectra.mask |= hide
    spectra.ivar[hide] = 0
    model = _model(spectra, encoder=encoder)
    loss, grads = _loss_and_grads(model, spectra)

    garbage = spectra.copy()
    garbage.flux[garbage.mask] = rng.normal(0, 1e6, garbage.mask.sum())  # wild values
    garbage.flux[0, np.flatnonzero(garbage.mask[0])[:3]] = np.nan  # and NaN, under the mask
    garbage.ivar[garbage.mask] = 1e9  # a masked pixel weighs zero whatever its ivar says
    loss2, grads2 = _loss_and_grads(model, garbage)
    assert loss2 == loss
    for g, g2 in zip(grads, grads2, strict=True):
        assert torch.equal(g, g2)

    unmasked = spectra.copy()
    pixel = np.flatnonzero(~spectra.mask[0])[10]
    unmasked.flux[0, pixel] += 5.0  # the same change on a usable pixel does count
    assert _loss_and_grads(model, unmasked)[0] != loss


@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_encode_decode_reconstruct_shapes(rest_spectra, encoder):
    model = _model(rest_spectra, encoder=encoder)
    z = model.encode(rest_spectra)
    assert z.shape == (len(rest_spectra), 4) and z.dtype == np.float32
    assert np.isfinite(z).all()
    flux = model.decode(z[:5])
    assert flux.shape == (5, rest_spectra.n_pixels) and flux.dtype == np.float32
    model.refine_steps = 0  # reconstruct = decode(encode) when latents are not refined
    np.testing.assert_allclose(model.reconstruct(rest_spectra[:5]), flux, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointError, match="N x 4 array of latent vectors"):
        model.decode(np.zeros((2, 3)))


def test_save_load_round_trip_and_clear_errors(rest_spectra, tmp_path):
    model = _model(rest_spectra, encoder="conv")
    model.fit_population(rest_spectra)
    path = model.save(tmp_path / "vae.pt")
    loaded = SpectrumVAE.load(path)
    assert loaded.architecture == model.architecture
    np.testing.assert_array_equal(loaded.encode(rest_spectra), model.encode(rest_spectra))
    np.testing.assert_array_equal(
        loaded.anomaly_score(rest_spectra), model.anomaly_score(rest_spectra)
    )

    other_grid = rest_spectra.copy()
    other_grid.wave = rest_spectra.wave * 1.01
    mismatch = r"grid mismatch: the model was trained on \d+ pixels"
    with pytest.raises(CheckpointError, match=mismatch):
        loaded.encode(other_grid)
    with pytest.raises(CheckpointError, match="no model checkpoint at"):
        SpectrumVAE.load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read the model checkpoint"):
        SpectrumVAE.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a labkit SpectrumVAE checkpoint"):
        SpectrumVAE.load(tmp_path / "foreign.pt")


def test_anomaly_score_is_relative_to_the_training_population(rest_spectra):
    model = _model(rest_spectra)
    model.fit_population(rest_spectra)
    scores = model.anomaly_score(rest_spectra)
    assert scores.shape == (len(rest_spectra),) and np.isfinite(scores).all()
    # robust standardisation: typical training spectra score near zero
    assert abs(np.median(scores)) < 0.5
    odd = rest_spectra[:5].copy()
    for row in range(5):  # a strong bump over 10 usable pixels: nothing like it in training
        usable = np.flatnonzero(~odd.mask[row])
        odd.flux[row, usable[len(usable) // 2 :][:10]] += 20.0
    assert model.anomaly_score(odd).min() > np.percentile(scores, 99)
    fully_masked = rest_spectra[:2].copy()
    fully_masked.mask[0] = True
    fully_masked.ivar[0] = 0
    result = model.anomaly_score(fully_masked)
    assert np.isnan(result[0]) and np.isfinite(result[1])


def test_refined_latents_fit_at_least_as_well_as_the_encoder(rest_spectra):
    model = _model(rest_spectra)
    arrays = training_arrays(rest_spectra[:30])
    flux, weight = torch.from_numpy(arrays.flux), torch.from_numpy(arrays.weight)
    with torch.no_grad():
        encoder_only = model.best_fit_latents(flux, weight, steps=0)
        refined = model.best_fit_latents(flux, weight, steps=20)

        def objective(z):
            chi2 = (weight * (flux - model.decode_tensor(z)) ** 2).sum(dim=1)
            return 0.5 * chi2 + 0.5 * z.pow(2).sum(dim=1)

        before, after = objective(encoder_only), objective(refined)
    assert torch.all(after <= before) and torch.any(after < before)
    torch.testing.assert_close(encoder_only, model.posterior(flux, weight)[0])


def test_a_fresh_model_starts_as_pca_of_its_training_spectra(rest_spectra):
    model = _model(rest_spectra)
    arrays = training_arrays(rest_spectra)
    model.start_from_pca(arrays.flux, arrays.weight)
    mean, std = model.flux_mean.numpy(), model.flux_std.numpy()
    x = np.where(arrays.weight > 0, (arrays.flux - mean) / std, 0.0).astype(np.float64)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    top = vt[: model.latent_dim]
    model.refine_steps = 0  # the encoder's guess alone: the projection onto the components
    expected = mean + std * (x @ top.T @ top)
    np.testing.assert_allclose(model.reconstruct(rest_spectra), expected, rtol=1e-3, atol=1e-3)
    latents = model.encode(rest_spectra)  # scaled so the prior N(0, 1) fits them
    np.testing.assert_allclose(latents.std(axis=0, ddof=1), 1.0, rtol=1e-3)


def test_weight_decay_leaves_the_linear_pca_paths_alone(rest_spectra):
    from labkit.vae.loop import _optimizer

    model = _model(rest_spectra)
    groups = _optimizer(model, TrainConfig(weight_decay=1e-3)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {id(p) for p in model.linear_parameters()}.isdisjoint(decayed)
    assert len(decayed) == len(list(model.parameters())) - 2


def test_latent_density_follows_clusters_not_one_gaussian():
    from labkit.vae.anomaly import TrainingPopulation

    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0.0], [5.0, 0.0]])  # two classes: their mean lies in empty space
    latents = np.concatenate([c + rng.normal(size=(300, 2)) for c in centres])
    population = TrainingPopulation(latent_dim=2, n_pixels=10)
    population.fit(np.ones(len(latents)), latents)
    members = population.components(np.ones(2), centres)[1]
    between = population.components(np.ones(1), np.zeros((1, 2)))[1]
    assert between[0] > 3 and members.max() < 1


def test_a_local_misfit_stands_out_where_chi2_per_pixel_barely_moves():
    from labkit.vae.anomaly import local_misfit

    pixels = 2000
    floored = torch.ones(3, pixels, dtype=torch.float64)  # noise-like: χ² 1 per pixel
    observed = torch.ones(3, pixels, dtype=torch.bool)
    floored[0, 1000:1015] += 20.0  # a bump over 15 pixels
    floored[1] += 15 * 20.0 / pixels  # the same excess χ², spread over the spectrum
    observed[2, 990:1030] = False  # a masked stretch counts for nothing
    floored[2, 990:1030] = 0.0
    worst = local_misfit(floored, observed).numpy()
    assert torch.allclose(floored[0].sum(), floored[1].sum())
    assert worst[0] > worst[1] + 2 and abs(worst[2] - np.log1p(1e-3)) < 1e-9


def _map_objective(model, z, flux, weight):
    chi2 = (weight * (flux - model.decode_tensor(z)) ** 2).sum(dim=1)
    return 0.5 * chi2 + 0.5 * z.pow(2).sum(dim=1)


def _long_refinement(model, flux, weight, steps=300):
    """What scoring used to do, for longer: Adam on χ²/2 + |z|²/2 from the encoder mean."""
    with torch.no_grad():
        z = model.posterior(flux, weight)[0].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=0.05)
    best = torch.full((len(z),), float("inf"))
    for _ in range(steps):
        objective = _map_objective(model, z, flux, weight)
        best = torch.minimum(best, objective.detach())
        optimizer.zero_grad()
        objective.sum().backward()
        optimizer.step()
    return best


def test_the_cheap_latent_fit_nearly_matches_a_long_refinement(rest_spectra):
    from labkit.vae.loop import _optimizer

    model = _model(rest_spectra)
    arrays = training_arrays(rest_spectra)
    model.start_from_pca(arrays.flux, arrays.weight)
    flux, weight = torch.from_numpy(arrays.flux), torch.from_numpy(arrays.weight)
    optimizer = _optimizer(model, TrainConfig(lr=3e-3))
    for _ in range(150):  # a little training so that the decoder's network bends the fit
        recon, mu, logvar = model(flux, weight)
        loss, pixels = negative_elbo(recon, mu, logvar, flux, weight, 1.0)
        optimizer.zero_grad()
        (loss / pixels).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        encoder_only = _map_objective(model, model.posterior(flux, weight)[0], flux, weight)
        cheap = _map_objective(model, model.best_fit_latents(flux, weight), flux, weight)
    long = _long_refinement(model, flux, weight)
    assert torch.all(cheap <= encoder_only)
    # nearly all of the way from the encoder's guess to the long refinement's optimum
    closed = (encoder_only - cheap) / (encoder_only - long).clamp(min=1e-6)
    assert torch.median(closed) > 0.9
    assert torch.median(cheap - long) < 0.05 * torch.median(encoder_only - long) + 1.0


def test_scores_are_deterministic_and_progress_false_is_silent(rest_spectra, capfd):
    model = _model(rest_spectra)
    model.fit_population(rest_spectra)
    capfd.readouterr()
    first = model.anomaly_score(rest_spectra, progress=False)
    model.chi2_per_pixel(rest_spectra, progress=False)
    model.encode(rest_spectra, progress=False)
    model.reconstruct(rest_spectra, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    np.testing.assert_array_equal(first, model.anomaly_score(rest_spectra, progress=False))
    model.anomaly_score(rest_spectra[:10], batch_size=4)
    assert "anomaly score" in capfd.readouterr().err  # the bar, by default


def test_decoder_jacobian_matches_autograd(rest_spectra):
    model = _model(rest_spectra)
    z = torch.randn(3, model.latent_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        jac = model.decoder_jacobian(z)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda v: model.decode_tensor(v[None])[0], row)
            for row in z
        ]
    )
    torch.testing.assert_close(jac, expected, rtol=1e-4, atol=1e-5)
