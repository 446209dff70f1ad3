"""The epoch loop every trainer runs: in this process, in each Ray Train worker, on a Dask worker.

It starts from a *training state* (model payload, optimizer state, epoch, history, early-stop
bookkeeping) and after every epoch hands the next state, packed as bytes, to ``emit``; the
caller writes it as that epoch's checkpoint. Shuffling and the VAE's sampling noise come from
generators seeded by (seed, epoch, rank), so a resumed run repeats exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from labkit.vae.config import TrainConfig
from labkit.vae.losses import kl_schedule, negative_elbo
from labkit.vae.model import SpectrumVAE

# relative improvement of the monitored loss that counts as progress for early stopping
MIN_IMPROVEMENT = 1e-4
# move the whole data set to the GPU when it is smaller than this
DEVICE_RESIDENT_BYTES = 4 * 1024**3
LR_FLOOR = 0.05

Report = dict[str, Any]


def pack(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, Any]:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def initial_state(model: SpectrumVAE, config: TrainConfig) -> dict[str, Any]:
    return {
        "model": model.to_payload(),
        "optimizer": None,
        "epoch": 0,
        "history": [],
        "best_epoch": 0,
        "best_loss": math.inf,
        "bad_epochs": 0,
        "config": config.to_dict(),
    }


def finished(state: dict[str, Any], config: TrainConfig) -> bool:
    """No epoch left: the epoch budget is spent or early stopping has fired."""
    if state["epoch"] >= config.epochs:
        return True
    return config.patience is not None and state["bad_epochs"] >= config.patience


def _generator(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63)
    return torch.Generator().manual_seed(seed)


class _Sum:
    """Loss and pixel totals across batches (and ranks), kept on the device until read."""

    def __init__(self, device: torch.device):
        self.values = torch.zeros(2, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, pixels: torch.Tensor) -> None:
        self.values[0] += loss.detach().double()
        self.values[1] += pixels.double()


def fit(
    flux: np.ndarray,
    weight: np.ndarray,
    train_index: np.ndarray,
    val_index: np.ndarray,
    config: TrainConfig,
    state: dict[str, Any],
    *,
    device: str | torch.device,
    emit: Callable[[Report], None],
    should_stop: Callable[[], bool] = lambda: False,
    rank: int = 0,
    world: int = 1,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
) -> None:
    """Train from ``state`` until the epochs are spent, early stopping fires or a stop is asked.

    Rank 0 calls ``emit({"record", "best_epoch", "state"})`` after each epoch, ``state`` being
    the packed training state. With ``world > 1`` each rank trains on its own shard of the
    training spectra and ``wrap`` makes the model data-parallel (DDP); losses and the stop
    decision are agreed across ranks.
    """
    device = torch.device(device)
    model = SpectrumVAE.from_payload(state["model"], "training state").to(device)
    optimizer = _optimizer(model, config)
    if state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    net = wrap(model) if wrap is not None else model
    flux_t, weight_t = _resident(flux, weight, device)
    history = list(state["history"])
    best_epoch, best_loss = state["best_epoch"], state["best_loss"]
    bad_epochs = state["bad_epochs"]
    train_index = torch.as_tensor(train_index, dtype=torch.long)
    val_shard = torch.as_tensor(np.array_split(val_index, world)[rank], dtype=torch.long)

    epoch = state["epoch"]
    while not finished({"epoch": epoch, "bad_epochs": bad_epochs}, config):
        if _agree(should_stop(), world, device):
            break
        epoch += 1
        started = time.perf_counter()
        beta = kl_schedule(epoch, config.kl_warmup, config.kl_weight)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch, config)
        shard = _shard(train_index, _generator(config.seed, epoch), rank, world)
        noise = _generator(config.seed, epoch, rank, 1)
        net.train()
        train_sum = _Sum(device)
        for start in range(0, len(shard), config.batch_size):
            rows = shard[start : start + config.batch_size]
            f, w = flux_t[rows].to(device, non_blocking=True), weight_t[rows].to(device)
            eps = torch.randn(len(rows), model.latent_dim, generator=noise).to(device)
            recon, mu, logvar = net(f, w, eps)
            loss, pixels = negative_elbo(recon, mu, logvar, f, w, beta)
            optimizer.zero_grad(set_to_none=True)
            (loss / pixels.clamp(min=1)).backward()
            optimizer.step()
            train_sum.add(loss, pixels)
        val_sum = _validate(model, flux_t, weight_t, val_shard, config, beta, device)
        totals = torch.cat([train_sum.values, val_sum.values])
        if world > 1:
            torch.distributed.all_reduce(totals)
        train_loss, val_loss = _ratio(totals[0], totals[1]), _ratio(totals[2], totals[3])
        record = {
            "epoch": epoch,
            "loss": train_loss,
            "val_loss": val_loss if len(val_index) else None,
            "seconds": 0.0,
        }
        monitored = val_loss if len(val_index) else train_loss
        if epoch >= config.kl_warmup:  # losses are comparable once the KL weight is final
            if monitored < best_loss * (1 - MIN_IMPROVEMENT) or best_epoch == 0:
                best_epoch, best_loss, bad_epochs = epoch, monitored, 0
            else:
                bad_epochs += 1
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if rank == 0:
            packed = pack(
                {
                    "model": model.to_payload(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "best_epoch": best_epoch,
                    "best_loss": best_loss,
                    "bad_epochs": bad_epochs,
                    "config": config.to_dict(),
                }
            )
            emit({"record": record, "best_epoch": best_epoch, "state": packed})


def _optimizer(model: SpectrumVAE, config: TrainConfig) -> torch.optim.Adam:
    """Adam, with weight decay on the networks only: the linear paths hold the principal
    components the model starts from, and shrinking them would only blur that fit."""
    linear = model.linear_parameters()
    network = [p for p in model.parameters() if all(p is not q for q in linear)]
    groups = [
        {"params": network, "weight_decay": config.weight_decay},
        {"params": linear, "weight_decay": 0.0},
    ]
    return torch.optim.Adam(groups, lr=config.lr)


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``lr * LR_FLOOR`` over ``config.epochs`` (or constant)."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = (epoch - 1) / max(1, config.epochs - 1)
    return config.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


def _resident(
    flux: np.ndarray, weight: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    with warnings.catch_warnings():
        # arrays from Ray's object store are read-only; training only ever reads them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        flux_t, weight_t = torch.from_numpy(flux), torch.from_numpy(weight)
    if device.type == "cuda" and flux.nbytes + weight.nbytes < DEVICE_RESIDENT_BYTES:
        return flux_t.to(device), weight_t.to(device)
    if device.type == "cuda":
        return flux_t.pin_memory(), weight_t.pin_memory()
    return flux_t, weight_t


def _shard(index: torch.Tensor, generator: torch.Generator, rank: int, world: int) -> torch.Tensor:
    """This rank's part of a shuffled epoch; every rank gets the same number of spectra."""
    order = index[torch.randperm(len(index), generator=generator)]
    if world == 1:
        return order
    per_rank = max(1, len(order) // world)
    if len(order) < world:  # tiny data: wrap around so no rank is idle (DDP needs all)
        order = order.repeat(world)
    return order[rank * per_rank : (rank + 1) * per_rank]


@torch.no_grad()
def _validate(
    model: SpectrumVAE,
    flux_t: torch.Tensor,
    weight_t: torch.Tensor,
    rows_all: torch.Tensor,
    config: TrainConfig,
    beta: float,
    device: torch.device,
) -> _Sum:
    # the same noise every epoch, so validation losses differ only through the model
    noise = _generator(config.seed, 0, 7)
    model.eval()
    total = _Sum(device)
    for start in range(0, len(rows_all), 1024):
        rows = rows_all[start : start + 1024]
        f, w = flux_t[rows].to(device), weight_t[rows].to(device)
        eps = torch.randn(len(rows), model.latent_dim, generator=noise).to(device)
        recon, mu, logvar = model(f, w, eps)
        loss, pixels = negative_elbo(recon, mu, logvar, f, w, beta)
        total.add(loss, pixels)
    return total


def _ratio(total: torch.Tensor, count: torch.Tensor) -> float:
    return float(total / count) if float(count) > 0 else math.nan


def _agree(flag: bool, world: int, device: torch.device) -> bool:
    """Every rank stops at the same epoch, or DDP would wait forever for the missing ones."""
    if world == 1:
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item() > 0)
