"""Dependencies point one way: deployments/ -> flows/ -> steps/ (issue #11)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"steps": {"flows", "deployments"}, "flows": {"deployments"}}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports (absolute imports; relative ones stay in the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package):
    """No module of steps/ imports flows or deployments; no module of flows/ imports deployments."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_only_the_settings_module_reads_our_environment_variables():
    """OCP_RESTART_* variables are read in flows/settings.py alone (the sandbox and the CLI's argparse defaults
    come from Settings too)."""
    read = re.compile(r"""(environ(\.get)?|getenv)\(?\s*\[?\s*["']OCP_RESTART_""")
    readers = [
        str(path.relative_to(ROOT))
        for package in ("steps", "flows", "deployments")
        for path in (ROOT / package).rglob("*.py")
        if read.search(path.read_text(encoding="utf-8")) and path.name != "settings.py"
    ]
    assert readers == []
