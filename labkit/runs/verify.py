"""``labkit verify``: re-execute a run or batch and say what no longer comes out the same.

Two kinds of drift are reported: a data file the notebook names whose sha256 differs from
the one frozen in the manifest, and a recorded value that differs from the stored one by
more than the tolerance (``math.isclose`` with ``rtol``/``atol`` for numbers, equality
otherwise).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.errors import BundleError
from labkit.runs.bundle import (
    BATCH_RESULTS,
    MANIFEST,
    RUN_RESULT,
    Bundle,
    load_bundle,
    sha256_file,
)
from labkit.runs.execute import execute_task, make_task, require_working_dir


@dataclass
class VerifyReport:
    """What changed; empty ``changes`` means the run reproduced."""

    path: Path
    runs_checked: int = 0
    files_checked: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        """One human-readable line per change."""
        out = []
        for change in self.changes:
            if change["kind"] == "data":
                actual = change["actual"] or "missing"
                out.append(
                    f"data file {change['path']} changed: sha256 {change['expected'][:12]} -> "
                    f"{actual[:12]}"
                )
            elif change["kind"] == "status":
                out.append(
                    f"run {change['run']}: status {change['expected']} -> {change['actual']}"
                    + (f" ({change['error']})" if change.get("error") else "")
                )
            else:
                out.append(
                    f"run {change['run']}: record {change['name']!r} changed: "
                    f"{_short(change['expected'])} -> {_short(change['actual'])}"
                )
        return out


def _short(value: Any) -> str:
    text = "missing" if value is _MISSING else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


_MISSING = object()


def verify(
    path: str | os.PathLike,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-12,
    progress: bool = True,
) -> VerifyReport:
    """Check a run folder (``result.json``), a batch folder (``results.json``) or a bundle.

    Data hashes are always checked; runs that succeeded are re-executed in this process
    with their parameters and their records compared. A bundle alone has no records, so
    only its data hashes are checked.
    """
    path = Path(path).expanduser().resolve()
    runs, bundle = _load_target(path)
    report = VerifyReport(path)
    for entry in bundle.manifest.get("data_files", []):
        report.files_checked += 1
        resolved = Path(entry["resolved"])
        actual = sha256_file(resolved) if resolved.is_file() else None
        if actual != entry["sha256"]:
            report.changes.append(
                {
                    "kind": "data",
                    "path": entry["path"],
                    "expected": entry["sha256"],
                    "actual": actual,
                }
            )
    to_check = [run for run in runs if run.get("status") == "ok"]
    if to_check:
        require_working_dir(bundle)
    from tqdm.auto import tqdm

    for run in tqdm(to_check, desc=f"verify {bundle.name}", unit="run", disable=not progress):
        index = run.get("index", 0)
        task = make_task(bundle, run.get("parameters", {}), index)
        outcome = execute_task(task)
        report.runs_checked += 1
        if outcome["status"] != "ok":
            report.changes.append(
                {
                    "kind": "status",
                    "run": index,
                    "expected": "ok",
                    "actual": outcome["status"],
                    "error": outcome.get("error"),
                }
            )
            continue
        report.changes.extend(
            _compare_records(index, run.get("records", {}), outcome["records"], rtol, atol)
        )
    return report


def _load_target(path: Path) -> tuple[list[dict[str, Any]], Bundle]:
    if (path / RUN_RESULT).is_file() or (path / BATCH_RESULTS).is_file():
        name = RUN_RESULT if (path / RUN_RESULT).is_file() else BATCH_RESULTS
        try:
            result = json.loads((path / name).read_text())
        except ValueError as exc:
            raise BundleError(f"cannot read {path / name}: {exc}", path=str(path)) from exc
        runs = result.get("runs", [result]) if name == BATCH_RESULTS else [result]
        if "bundle" not in result:
            raise BundleError(f"{path / name} does not name its bundle", path=str(path))
        return runs, load_bundle(result["bundle"])
    if (path / MANIFEST).is_file():
        return [], load_bundle(path)
    raise BundleError(
        f"{path} is not a run, batch or bundle folder (no {RUN_RESULT}, {BATCH_RESULTS} or "
        f"{MANIFEST})",
        path=str(path),
    )


def _compare_records(
    run: int, expected: dict[str, Any], actual: dict[str, Any], rtol: float, atol: float
) -> list[dict[str, Any]]:
    changes = []
    for name in list(expected) + [n for n in actual if n not in expected]:
        old, new = expected.get(name, _MISSING), actual.get(name, _MISSING)
        if old is _MISSING or new is _MISSING or not values_match(old, new, rtol, atol):
            changes.append(
                {"kind": "record", "run": run, "name": name, "expected": old, "actual": new}
            )
    return changes


def values_match(old: Any, new: Any, rtol: float, atol: float) -> bool:
    """Equal JSON values, numbers within tolerance, recursively through lists and dicts."""
    if _is_number(old) and _is_number(new):
        return math.isclose(old, new, rel_tol=rtol, abs_tol=atol)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(
            values_match(a, b, rtol, atol) for a, b in zip(old, new, strict=True)
        )
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() == new.keys() and all(
            values_match(old[key], new[key], rtol, atol) for key in old
        )
    return type(old) is type(new) and old == new


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
