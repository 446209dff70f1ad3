"""Shared output for benchmark scripts: a JSON file of metrics and a printed table."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, quick: bool, metrics: dict[str, float]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"name": name, "quick": quick, "metrics": metrics}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return path


def print_table(title: str, rows: list[tuple[str, float, float, str]]) -> None:
    """rows: (what, labkit value, raw value, target) -> a table with the ratio labkit/raw."""
    print(f"\n{title}")
    print(f"{'measure':<28}{'labkit':>12}{'raw':>12}{'ratio':>9}  target")
    for what, ours, raw, target in rows:
        print(f"{what:<28}{ours:>12.4g}{raw:>12.4g}{ours / raw:>9.3f}  {target}")
