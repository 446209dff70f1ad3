"""Ray Tune sweeps with ASHA against full-length sweeps, and what MLflow tracking costs.

asha_wall_ratio: wall time of sweeps of 16 trials with ASHA / the same sweeps with every trial
run to max_epochs without early stopping (target <= 0.5); asha_best_gap: (best val_loss with
ASHA - best without) / best without, the mean over the sweeps (target <= 0.02). Each sweep is
a seeded random search (``tune(seed=...)``: both sides train the same 16 settings in the same
order), as ASHA is meant to be used; several seeds, since one sweep's outcome depends on
which settings it drew and in what order they come (asynchronous ASHA promotes the first
trials at a rung more freely). The trials keep a moving average of their weights
(``ema_decay``): its validation loss is smooth enough to rank trials at a rung.
tracking_overhead_ratio: one in-process training with tracking on / off (interleaved
repeats, the same seed, the fastest of each side: the machine's noise is larger than the
overhead; target <= 1.05); batch_tracking_overhead_ratio: the same for a batch of 8 runs on
a 2-worker local Dask cluster (target <= 1.1). Both sides of every ratio run in this
process, on an embedded local cluster; ``sweep_load_*`` is the machine's 1-minute load
average before and after the sweeps (other jobs share the cores).

Size: the full run (8000 spectra, 24 epochs, 5 seeds) is the one the targets are for; an
epoch of a trial there takes ~0.5 s on one core against ~8 s per sweep of Tune's start and
the trial processes' imports, which every sweep pays. --quick (4000 spectra, 16 epochs, 2
seeds) halves the epochs' share, so its wall ratio sits above its epoch ratio
(``sweep_*_epochs``, the scheduler's own figure).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from batch import write_notebook  # noqa: E402
from report import print_table, write_results  # noqa: E402

GRID = (900.0, 9800.0, 2e-3)  # ~520 rest-frame pixels: a sweep's worth of small trainings
TRIALS = 16
SPACE = {"lr": (1e-3, 2e-2), "latent_dim": [8, 16]}  # lr log-uniform in that range
EMA_DECAY = 0.98


def spectra(n: int):
    from labkit.spectra import mock_survey, preprocess, rest_grid

    observed = mock_survey(n, anomaly_fraction=0.02, seed=11)
    return preprocess(observed, grid=rest_grid(*GRID[:2], GRID[2]), cluster=False, progress=False)


@contextmanager
def tracking(on: bool, folder: Path):
    before = os.environ.get("LABKIT_TRACKING")
    os.environ["LABKIT_TRACKING"] = "on" if on else "off"
    os.environ["LABKIT_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        yield
    finally:
        os.environ.pop("LABKIT_TRACKING", None)
        if before is not None:
            os.environ["LABKIT_TRACKING"] = before


def measure_sweeps(data, work: Path, max_epochs: int, seeds: int) -> dict[str, float]:
    from ray import tune as ray_tune

    import labkit
    from labkit.vae import TrainConfig, tune

    base = TrainConfig(
        hidden=(128, 64),
        batch_size=64,
        kl_warmup=max(1, max_epochs // 8),
        ema_decay=EMA_DECAY,
        threads=1,
        seed=3,
    )
    space = {"lr": ray_tune.loguniform(*SPACE["lr"]), "latent_dim": SPACE["latent_dim"]}
    labkit.connect(backend="ray")
    out: dict[str, float] = {"load_before": os.getloadavg()[0]}
    try:
        for seed in range(seeds):
            for scheduler in ("asha", None):
                label = f"{scheduler or 'fifo'}_{seed}"
                start = time.perf_counter()
                result = tune(
                    data,
                    space,
                    num_samples=TRIALS,
                    scheduler=scheduler,
                    max_epochs=max_epochs,
                    base=base,
                    storage_path=work / "sweeps",
                    name=label,
                    seed=seed,
                    progress=False,
                )
                out[f"{label}_s"] = time.perf_counter() - start
                out[f"{label}_best_val_loss"] = float(result.best_result["val_loss"])
                out[f"{label}_epochs"] = float(result.trials["epoch"].sum())
    finally:
        labkit.disconnect()
    out["load_after"] = os.getloadavg()[0]
    for side in ("asha", "fifo"):
        for figure in ("s", "epochs"):
            out[f"{side}_{figure}"] = sum(out[f"{side}_{i}_{figure}"] for i in range(seeds))
    gaps = [
        out[f"asha_{i}_best_val_loss"] / out[f"fifo_{i}_best_val_loss"] - 1 for i in range(seeds)
    ]
    out["best_gap"], out["best_gap_max"] = sum(gaps) / seeds, max(gaps)
    return out


def measure_training(data, work: Path, repeats: int) -> dict[str, float]:
    from labkit.vae import TrainConfig, train

    config = TrainConfig(hidden=(256, 128), batch_size=64, epochs=12, kl_warmup=2, seed=1)
    timings: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(repeats + 1):  # the first pair warms both paths (imports, the store)
        for on in (True, False):
            with tracking(on, work):
                start = time.perf_counter()
                train(
                    data, config, cluster=False, checkpoint_dir=work / f"t-{i}-{on}", progress=False
                )
                if i:
                    timings["on" if on else "off"].append(time.perf_counter() - start)
    return {name: min(values) for name, values in timings.items()}


def measure_batches(work: Path, repeats: int) -> dict[str, float]:
    import labkit
    from labkit.runs import batch, freeze

    source = write_notebook(work / "project" / "analysis.ipynb")
    bundle = freeze(source, name="analysis", out=work / "bundles")
    timings: dict[str, list[float]] = {"on": [], "off": []}
    labkit.connect(backend="dask", workers=2)
    try:
        for i in range(repeats + 1):
            for on in (True, False):
                with tracking(on, work):
                    start = time.perf_counter()
                    result = batch(
                        bundle, {"seed": list(range(8))}, out=work / f"b-{i}-{on}", progress=False
                    )
                    assert result.ok, result.failed
                    if i:
                        timings["on" if on else "off"].append(time.perf_counter() - start)
    finally:
        labkit.disconnect()
    return {name: min(values) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    args = parser.parse_args()
    n, max_epochs, seeds, repeats = (4000, 16, 2, 4) if args.quick else (8000, 24, 5, 6)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-tune-") as tmp:
        work = Path(tmp)
        data = spectra(n)
        sweeps = measure_sweeps(data, work, max_epochs, seeds)
        training = measure_training(data, work, repeats)
        batches = measure_batches(work, repeats)
    metrics = {
        "asha_wall_ratio": sweeps["asha_s"] / sweeps["fifo_s"],
        "asha_best_gap": sweeps["best_gap"],
        "tracking_overhead_ratio": training["on"] / training["off"],
        "batch_tracking_overhead_ratio": batches["on"] / batches["off"],
        **{f"sweep_{key}": value for key, value in sweeps.items()},
        "train_tracked_s": training["on"],
        "train_untracked_s": training["off"],
        "batch_tracked_s": batches["on"],
        "batch_untracked_s": batches["off"],
        "spectra": n,
        "max_epochs": max_epochs,
        "sweeps": seeds,
    }
    metrics = {key: round(float(value), 4) for key, value in metrics.items()}
    write_results("tune", args.quick, metrics)
    print_table(
        f"{seeds} sweeps of {TRIALS} trials x {max_epochs} epochs on {n} spectra; "
        "tracking on/off (seconds)",
        [
            ("sweeps: ASHA / full", sweeps["asha_s"], sweeps["fifo_s"], "<= 0.5"),
            *[
                (
                    f"best val_loss {i}: ASHA / full",
                    sweeps[f"asha_{i}_best_val_loss"],
                    sweeps[f"fifo_{i}_best_val_loss"],
                    "mean <= 1.02",
                )
                for i in range(seeds)
            ],
            ("training: tracked / not", training["on"], training["off"], "<= 1.05"),
            ("batch of 8: tracked / not", batches["on"], batches["off"], "<= 1.1"),
        ],
    )


if __name__ == "__main__":
    main()
