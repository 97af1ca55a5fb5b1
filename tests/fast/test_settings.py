"""The settings object is built at entry points only, and passed down (#19)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "steps", "deployments")
# Where a process (or a flow run, in-process or on a worker) starts: the only places that build one.
ENTRY_POINTS = {
    ("deployments/cli.py", "_main"),
    ("flows/restart.py", "batch_restart_agents"),
    ("flows/operations.py", "task_operation"),
    ("flows/agent_ops.py", "restart_agent"),
    ("flows/agent_ops.py", "stop_agent"),
    ("flows/agent_ops.py", "batch_stop_agents"),
}


def _calls(tree: ast.AST, name: str) -> list[tuple[str, int]]:
    """(enclosing function, line) of every call of ``name`` (or ``something.name``)."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                callee = child.func
                called = callee.id if isinstance(callee, ast.Name) else getattr(callee, "attr", None)
                if called == name:
                    found.append((function, child.lineno))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def _product_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_only_entry_points_build_settings():
    """Settings() appears only in the entry points: every other module receives the object."""
    builders = {
        (str(path.relative_to(ROOT)), function, line)
        for path in _product_files()
        for function, line in _calls(ast.parse(path.read_text()), "Settings")
    }
    strays = sorted(b for b in builders if b[:2] not in ENTRY_POINTS)
    assert not strays, f"Settings() built outside the entry points {sorted(ENTRY_POINTS)}: {strays}"
    assert {b[:2] for b in builders} == ENTRY_POINTS, "an entry point no longer builds the settings"


def test_the_environment_is_written_in_one_place():
    """Only deployments/prefect_env.py writes environment variables at run time (Prefect reads them at import)."""
    writers = []
    for path in _product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                target = next(
                    (t for t in targets if isinstance(t, ast.Subscript) and "environ" in ast.unparse(t.value)), None
                )
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                text = ast.unparse(node.func)
                if text in ("os.putenv", "os.unsetenv") or (
                    "environ" in text and node.func.attr in ("setdefault", "update", "pop", "clear")
                ):
                    target = node
            if target is not None:
                writers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert all(w.startswith("deployments/prefect_env.py:") for w in writers), writers


def test_prefect_settings_refuse_a_write_after_prefect_read_them(monkeypatch):
    """A Prefect setting written after Prefect's import is refused, not silently ignored."""
    import prefect  # noqa: F401 - Prefect has read its settings

    from deployments import prefect_env

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    with pytest.raises(
        prefect_env.PrefectAlreadyImported, match="PREFECT_API_URL='http://127.0.0.1:2/api' must be set"
    ):
        prefect_env.use_api("http://127.0.0.1:2/api")
    prefect_env.use_api("http://127.0.0.1:1/api")  # the value Prefect has: nothing to do


def test_users_file_follows_the_setting(tmp_path):
    """OCP_RESTART_USERS names the API's users file; by default it lives in the home."""
    assert Settings(home=tmp_path).users_path == tmp_path / "users.toml"
    assert Settings(home=tmp_path, users=tmp_path / "u.toml").users_path == tmp_path / "u.toml"
