"""``labkit demo``: the main job, headless, on embedded defaults.

Today it attaches a local cluster and runs a distributed map; later stages (spectra,
training, search, frozen runs) join here as they land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

import labkit
from labkit.clusters.base import format_bytes


def _signal_to_noise(seed: int) -> float:
    """A stand-in per-spectrum workload: median S/N of a noisy power-law continuum."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(3600.0, 9800.0, 2000)
    flux = 10.0 * (wave / 5000.0) ** -1.5
    sigma = 0.5 + 0.1 * rng.random(wave.size)
    observed = flux + rng.normal(0.0, sigma)
    return float(np.median(observed / sigma))


def run_demo(backend: str | None = None, n_spectra: int = 2000, out: str = "labkit-demo") -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    cluster = labkit.connect(backend=backend)
    timings["connect_s"] = time.perf_counter() - start
    try:
        resources = cluster.resources()
        start = time.perf_counter()
        snr = cluster.map(_signal_to_noise, range(n_spectra), desc="signal-to-noise")
        timings["map_s"] = time.perf_counter() - start
        summary = {
            "backend": cluster.backend,
            "address": cluster.address,
            "dashboard": cluster.dashboard_url,
            "workers": resources["workers"],
            "cpus": resources["cpus"],
            "memory": format_bytes(resources["memory_bytes"]),
            "items": n_spectra,
            "items_per_s": round(n_spectra / timings["map_s"], 1),
            "median_snr": round(float(np.median(snr)), 2),
            **{key: round(value, 3) for key, value in timings.items()},
        }
    finally:
        labkit.disconnect()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table("labkit demo", summary)
    return summary


def print_table(title: str, rows: dict) -> None:
    width = max(len(key) for key in rows)
    print(f"\n{title}\n{'-' * (width + 30)}")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
