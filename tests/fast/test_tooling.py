"""The code stays linted, formatted and typed: ruff and mypy, configured in pyproject.toml (#19)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=["ruff-check", "ruff-format"]
)
def test_ruff_finds_nothing(command):
    """`ruff check` and `ruff format --check` pass on the whole tree (the dev extra installs ruff)."""
    result = _run(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_flows_and_steps():
    """`mypy` (strict on flows/ and steps/, as pyproject.toml says) finds no error."""
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_two_test_files_share_a_name():
    """Tests are collected as rootdir-less modules: tests/fast/test_x.py beside tests/test_x.py stops the whole
    suite at collection ("import file mismatch"), which the fast tier alone never shows (found at a merge, #20)."""
    names: dict[str, list[str]] = {}
    for path in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert not {name: paths for name, paths in names.items() if len(paths) > 1}
