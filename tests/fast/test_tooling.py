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
