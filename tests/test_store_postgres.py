"""The task store's schema migrations on PostgreSQL (a throwaway cluster): the revisions make schema.py's tables, a
store 0.1.0 wrote is upgraded in place keeping every row, two processes open a new store at once."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import sqlalchemy as sa
from conftest import ROOT, free_port
from old_store import every_row, load_0_1_0

from deployments.sandbox.postgres import PostgresCluster
from flows.plan import build_plan
from flows.store import TaskStore
from flows.store.hosts import AgentStatus
from flows.store.migrate import BASELINE, SHIPPED, VERSION_TABLE
from flows.store.schema import metadata

DATABASES = ("legacy", "migrated", "created", "racing")


@pytest.fixture(scope="module")
def pg():
    cluster = PostgresCluster(free_port(), databases=DATABASES)
    if not cluster.available:
        pytest.fail("PostgreSQL is not installed: run ./bootstrap.sh --test (it installs Debian's postgresql)")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def shape(url: str) -> dict:
    """What the database's tables are, as PostgreSQL reports them: columns (type, nullability, default), keys,
    indexes."""
    engine = sa.create_engine(url)
    inspector = sa.inspect(engine)
    found = {}
    for table in sorted(set(inspector.get_table_names()) - {VERSION_TABLE}):
        found[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in inspector.get_columns(table)],
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "foreign keys": [
                (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                for fk in inspector.get_foreign_keys(table)
            ],
            "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)),
        }
    engine.dispose()
    return found


def test_the_revisions_make_the_tables_schema_py_describes(pg):
    """Columns, types, defaults (the id sequences), keys and indexes match ``metadata.create_all``'s."""
    TaskStore(pg.url("migrated", "psycopg")).close()
    engine = sa.create_engine(pg.url("created", "psycopg"))
    metadata.create_all(engine)
    engine.dispose()
    assert shape(pg.url("migrated", "psycopg")) == shape(pg.url("created", "psycopg"))


def write_0_1_0(url: str, tmp_path) -> dict[str, list[dict]]:
    """The 0.1.0 store's rows written under revision 0001's tables with no version table, as 0.1.0 left a
    PostgreSQL store; its id sequences where its inserts left them (a pg_dump restores them so). Returns the rows."""
    from alembic import command
    from alembic.config import Config

    old = sa.create_engine(load_0_1_0(tmp_path / "old.db"))
    rows = every_row(old)
    with old.connect() as conn:
        sequences = dict(conn.execute(sa.text("SELECT name, seq FROM sqlite_sequence")).all())
    old.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(SHIPPED.location))
        config.attributes["connection"] = conn
        command.upgrade(config, BASELINE)
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
        tables = sa.MetaData()
        tables.reflect(conn)
        for name, table_rows in rows.items():
            conn.execute(tables.tables[name].insert(), table_rows)
        for name, last in (*sequences.items(), ("subtask_logs", max(r["id"] for r in rows["subtask_logs"]))):
            conn.execute(sa.text(f"SELECT setval('{name}_id_seq', {last})"))
    engine.dispose()
    return rows


def test_a_store_from_0_1_0_is_upgraded_in_place_keeping_every_row(pg, tmp_path, caplog):
    """Stamped and upgraded with one log line; every row kept; new task, subtask and log ids continue after the old."""
    caplog.set_level(logging.INFO, logger="flows.store")
    url = pg.url("legacy", "psycopg")
    before = write_0_1_0(url, tmp_path)
    with TaskStore(url) as store:
        assert store.db.upgraded == ("unversioned", SHIPPED.head)
        after = every_row(store.engine)
        assert {row.pop("template") for row in after["tasks"]} == {"batch_restart"}  # revision 0002's default
        assert after == before
        assert store.locks() == {4: 3, 5: 3}
        assert store.load(3).task.runner == "pid 4242 on fixture-host [0a1b2c3d]"
        assert store.host_agent_status(1) == AgentStatus("AVAILABLE", before["host_agent_status"][0]["updated"])
        task_id = store.create_task(build_plan([9]), creator="admin", executor="10.0.0.1")
        assert task_id == 5
        subtasks = store.load(task_id).subtasks
        assert min(s.id for s in subtasks) == 47
        store.append_logs([(subtasks[0].id, "a new line")])
        with store.engine.connect() as conn:
            last_log = conn.execute(sa.text("SELECT max(id) FROM subtask_logs")).scalar()
        assert last_log == before["subtask_logs"][-1]["id"] + 1
    messages = [r.getMessage() for r in caplog.records if r.name == "flows.store"]
    assert messages == [
        f"the task store {pg.url('legacy', 'psycopg')} was upgraded from a store made before "
        f"migrations (revision {BASELINE}'s tables) to revision {SHIPPED.head}"
    ]
    with TaskStore(url):
        pass
    assert len([r for r in caplog.records if r.name == "flows.store"]) == 1, "no line once it is current"


CHILD = """
import sys, time
from pathlib import Path
from flows.store import TaskStore

url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.001)
with TaskStore(url) as store:
    print("upgraded" if store.db.upgraded else "current")
"""


def test_processes_opening_a_new_store_at_once_all_succeed_and_one_upgrades(pg, tmp_path):
    """Three processes open the same empty database at the same moment: the advisory lock serialises the upgrade."""
    import time

    url, go = pg.url("racing", "psycopg"), tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(3)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(r), str(go)],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in ready
    ]
    try:
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [child.returncode for child in children] == [0, 0, 0], [err for _, err in results]
    assert sorted(out.strip() for out, _ in results) == ["current", "current", "upgraded"]
