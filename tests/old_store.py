"""The store ocp-restart 0.1.0 wrote, before migrations (``data/store-0.1.0.sql``; ``data/make_store_0_1_0.py`` says
what it holds), loaded into a fresh SQLite file; and every row of a store, read back to compare stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

DUMP = Path(__file__).parent / "data" / "store-0.1.0.sql"
TABLES = ("tasks", "subtasks", "subtask_logs", "host_locks", "host_snapshots", "host_agent_status")


def load_0_1_0(path: Path) -> str:
    """The 0.1.0 store written to ``path`` (a new SQLite file); its URL."""
    conn = sqlite3.connect(path)
    conn.executescript(DUMP.read_text())
    conn.close()
    return f"sqlite:///{path}"


def every_row(engine: sa.Engine) -> dict[str, list[dict]]:
    """Every row of the store's tables, in primary-key order."""
    meta = sa.MetaData()
    meta.reflect(engine, only=TABLES)
    with engine.connect() as conn:
        return {
            name: [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(*table.primary_key))]
            for name, table in meta.tables.items()
        }
