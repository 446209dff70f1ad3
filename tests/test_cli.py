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


# `labkit demo` end to end: tests/test_demo.py
