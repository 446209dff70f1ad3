import json
import subprocess
import sys
from pathlib import Path

LABKIT = str(Path(sys.executable).parent / "labkit")


def test_help_lists_commands():
    result = subprocess.run([LABKIT, "--help"], capture_output=True, text=True, check=True)
    assert "demo" in result.stdout


def test_bad_option_exits_non_zero_with_reason():
    result = subprocess.run([LABKIT, "demo", "--spectra", "0"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "--spectra" in result.stderr


def test_demo_runs_end_to_end_on_a_local_cluster(tmp_path):
    result = subprocess.run(
        [LABKIT, "demo", "--spectra", "200", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "ray" and summary["items"] == 200
    assert summary["median_snr"] > 1
    for key in ("backend", "address", "workers", "cpus", "items_per_s"):
        assert key in result.stdout
