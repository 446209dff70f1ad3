"""The epoch loop every trainer runs: in this process, in each Ray Train worker, on a Dask worker.

It starts from a *training state* (model payload, optimizer state, epoch, history, early-stop
bookkeeping) and after every epoch hands the next state, packed as bytes, to ``emit``; the
caller writes it as that epoch's checkpoint. Shuffling and the VAE's sampling noise come from
generators seeded by (seed, epoch, rank), so a resumed run repeats exactly what an
uninterrupted one would have done.

The data come from a ``ChunkSource`` (in-memory arrays or a store, the same rule for both):
each epoch the chunk order is permuted (seeded by (seed, epoch)), each rank reads its share of
the chunks in that order with bounded prefetch, and the training rows of every
``SHUFFLE_CHUNKS`` chunks are pooled, shuffled and cut into batches. Validation rows are read
once and kept on the device, at most ``VAL_RESIDENT_BYTES`` of them (a bounded sample of a
larger validation set).
"""

from __future__ import annotations

import io
import itertools
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from labkit.vae.config import TrainConfig
from labkit.vae.data import ChunkSource, Prefetch, batches, rows_by_chunk
from labkit.vae.losses import kl_schedule, negative_elbo
from labkit.vae.model import SpectrumVAE

# relative improvement of the monitored loss that counts as progress for early stopping
MIN_IMPROVEMENT = 1e-4
# validation rows are read once and kept on the device, up to this many bytes (~17k spectra
# at ~1900 pixels: a 170k-spectrum survey at val_fraction=0.1). A larger validation set is
# measured on that many of its rows, taken from whole chunks in a seeded order: re-reading
# every chunk after each epoch (the rows are spread over all of them) doubled the reads of
# an epoch at 1.6M spectra, and the loss of 17k spectra is already known to ~1e-3.
VAL_RESIDENT_BYTES = 256 * 1024**2
VAL_BATCH = 1024
LR_FLOOR = 0.05
# with ``TrainConfig.ema_decay`` a state's "model" is the moving average (what validation
# measured and a run keeps); the optimizer's own weights and the average's update count are
# kept beside it so that a resumed run goes on exactly
TRAINED_WEIGHTS = "trained_model"
AVERAGED_UPDATES = "averaged_updates"

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
    source: ChunkSource,
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
    checkpoint_now: Callable[[], bool] = lambda: False,
) -> None:
    """Train from ``state`` until the epochs are spent, early stopping fires or a stop is asked.

    Rank 0 calls ``emit({"record", "best_epoch", "state"})`` after each epoch, ``state`` being
    the packed training state. With ``world > 1`` each rank trains on its own shard of the
    chunks (all ranks doing the same number of steps) and ``wrap`` makes the model
    data-parallel (DDP); losses and the stop decision are agreed across ranks.

    With one rank, ``checkpoint_now()`` is asked after every batch: when True, ``emit({"partial":
    state})`` hands over the state part way through the epoch (its ``step``: batches done, and
    their loss sums), which a resumed run continues from exactly, skipping those batches.
    """
    device = torch.device(device)
    trained = state.get(TRAINED_WEIGHTS, state["model"])
    model = SpectrumVAE.from_payload(trained, "training state").to(device)
    optimizer = _optimizer(model, config)
    if state.get("optimizer"):
        optimizer.load_state_dict(state["optimizer"])
    net = wrap(model) if wrap is not None else model
    average = _moving_average(model, state, config)
    kept = average.module if average is not None else model  # what validation measures
    history = list(state["history"])
    best_epoch, best_loss = state["best_epoch"], state["best_loss"]
    bad_epochs = state["bad_epochs"]
    train_rows = rows_by_chunk(train_index, source)
    val_plan = shard_rows(rows_by_chunk(val_index, source), rank, world)
    validation = _Validation(source, bounded(val_plan, source.n_pixels, config.seed), device)

    epoch = state["epoch"]
    done_steps, done_sum = state.get("step", 0), state.get("train_sum")

    def snapshot(completed: int, **more: Any) -> bytes:
        return pack(
            {
                "model": kept.to_payload(),
                **(_average_state(model, average) if average is not None else {}),
                "optimizer": optimizer.state_dict(),
                "epoch": completed,
                "history": history,
                "best_epoch": best_epoch,
                "best_loss": best_loss,
                "bad_epochs": bad_epochs,
                "config": config.to_dict(),
                **more,
            }
        )

    while not finished({"epoch": epoch, "bad_epochs": bad_epochs}, config):
        if _agree(should_stop(), world, device):
            break
        epoch += 1
        started = time.perf_counter()
        beta = kl_schedule(epoch, config.kl_warmup, config.kl_weight)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch, config)
        plans = [epoch_plan(train_rows, config.seed, epoch, r, world) for r in range(world)]
        steps = min(-(-sum(len(rows) for _, rows in plan) // config.batch_size) for plan in plans)
        shuffle = _generator(config.seed, epoch, rank, 2)
        noise = _generator(config.seed, epoch, rank, 1)
        net.train()
        train_sum = _Sum(device)
        if done_sum is not None:
            train_sum.values += torch.tensor(done_sum, dtype=torch.float64, device=device)
        with Prefetch(source.take, plans[rank]) as parts:
            chosen = itertools.islice(batches(parts, config.batch_size, shuffle), steps)
            for step, (f, w) in enumerate(chosen, 1):
                eps = torch.randn(len(f), model.latent_dim, generator=noise).to(device)
                if step <= done_steps:
                    continue  # trained before the part-way checkpoint this run resumed from
                f, w = _tensor(f, device), _tensor(w, device)
                recon, mu, logvar = net(f, w, eps)
                loss, pixels = negative_elbo(recon, mu, logvar, f, w, beta)
                optimizer.zero_grad(set_to_none=True)
                (loss / pixels.clamp(min=1)).backward()
                optimizer.step()
                if average is not None:
                    average.update_parameters(model)
                train_sum.add(loss, pixels)
                if world == 1 and checkpoint_now():
                    sums = train_sum.values.tolist()
                    emit({"partial": snapshot(epoch - 1, step=step, train_sum=sums)})
        done_steps, done_sum = 0, None
        val_sum = _validate(kept, validation, config, beta, device)
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
            emit({"record": record, "best_epoch": best_epoch, "state": snapshot(epoch)})


Plan = list[tuple[int, np.ndarray]]  # (chunk, rows within it), in reading order


def _few_chunks(n_chunks: int, world: int) -> bool:
    """Too few chunks to shard them among ranks: each rank then reads all, takes some rows."""
    return world > 1 and n_chunks < 2 * world


def epoch_plan(train_rows: list[np.ndarray], seed: int, epoch: int, rank: int, world: int) -> Plan:
    """The chunks rank ``rank`` reads in ``epoch``, in order, with the training rows of each.

    The chunk order is a permutation seeded by (seed, epoch), shared by all ranks; rank r
    reads every world-th chunk of it from the r-th on. With fewer than two chunks per rank
    (tiny data) every rank reads all of them and takes its own share of each chunk's rows.
    """
    order = torch.randperm(len(train_rows), generator=_generator(seed, epoch)).tolist()
    if not _few_chunks(len(train_rows), world):
        return [(k, train_rows[k]) for k in order[rank::world]]
    split = _generator(seed, epoch, 3)  # the same on every rank: the shares are disjoint
    plan = []
    for k in order:
        rows = train_rows[k][torch.randperm(len(train_rows[k]), generator=split).numpy()]
        plan.append((k, rows[rank::world]))
    return plan


def shard_rows(rows: list[np.ndarray], rank: int, world: int) -> Plan:
    """This rank's fixed share of per-chunk rows (validation): its chunks, or its rows of all."""
    if _few_chunks(len(rows), world):
        return [(k, r[rank::world]) for k, r in enumerate(rows) if len(r[rank::world])]
    return [(k, rows[k]) for k in range(rank, len(rows), world) if len(rows[k])]


def bounded(plan: Plan, n_pixels: int, seed: int, limit: int | None = None) -> Plan:
    """Whole chunks of ``plan``, in a seeded order, whose rows fit in ``limit`` bytes
    (``VAL_RESIDENT_BYTES``); the last one taken may be cut."""
    limit = VAL_RESIDENT_BYTES if limit is None else limit
    capacity = max(1, limit // (n_pixels * 8))  # flux and weight, float32
    if sum(len(rows) for _, rows in plan) <= capacity:
        return plan
    order = np.random.default_rng([seed, 23]).permutation(len(plan))
    kept, total = [], 0
    for i in order:
        chunk, rows = plan[i]
        rows = rows[: capacity - total]
        if not len(rows):
            break
        kept.append((chunk, rows))
        total += len(rows)
    return sorted(kept, key=lambda item: item[0])


class _Validation:
    """This rank's validation rows, read once and kept on the device as batches."""

    def __init__(self, source: ChunkSource, plan: Plan, device: torch.device):
        self.rows = sum(len(rows) for _, rows in plan)
        with Prefetch(source.take, plan) as parts:
            self.resident = [
                (_tensor(f, device), _tensor(w, device)) for f, w in batches(parts, VAL_BATCH)
            ]

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.resident)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


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


def _moving_average(
    model: SpectrumVAE, state: dict[str, Any], config: TrainConfig
) -> AveragedModel | None:
    """The exponential moving average of ``model``'s weights (``config.ema_decay``), picked
    up where ``state`` left it; None without one. Its first update copies the weights."""
    if config.ema_decay is None:
        return None
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    if TRAINED_WEIGHTS in state:  # the state's model is the average so far
        average.module.load_state_dict(state["model"]["state_dict"])
        average.n_averaged.fill_(int(state[AVERAGED_UPDATES]))
    return average


def _average_state(model: SpectrumVAE, average: AveragedModel) -> dict[str, Any]:
    """What a checkpoint needs beside the average to go on: the weights the optimizer
    trains, and how many updates the average has had."""
    return {TRAINED_WEIGHTS: model.to_payload(), AVERAGED_UPDATES: int(average.n_averaged)}


def learning_rate(epoch: int, config: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``lr * LR_FLOOR`` over ``config.epochs`` (or constant)."""
    if config.lr_schedule == "constant":
        return config.lr
    progress = (epoch - 1) / max(1, config.epochs - 1)
    return config.lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def _validate(
    model: SpectrumVAE,
    validation: _Validation,
    config: TrainConfig,
    beta: float,
    device: torch.device,
) -> _Sum:
    # the same noise every epoch, so validation losses differ only through the model
    noise = _generator(config.seed, 0, 7)
    model.eval()
    total = _Sum(device)
    for f, w in validation.batches():
        eps = torch.randn(len(f), model.latent_dim, generator=noise).to(device)
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
