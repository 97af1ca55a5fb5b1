"""The task store's schema migrations on SQLite: new stores, the store 0.1.0 wrote, a newer store, two processes."""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from old_store import TABLES, every_row, load_0_1_0

from flows.errors import StoreUnavailableError, StoreVersionError
from flows.plan import build_plan
from flows.store import TaskStore
from flows.store.database import Database
from flows.store.hosts import AgentStatus
from flows.store.migrate import BASELINE, SHIPPED, VERSION_TABLE, Migrations
from flows.store.schema import metadata

ROOT = Path(__file__).resolve().parents[2]


def schema_sql(path: Path) -> list[str]:
    """The DDL SQLite keeps for the store's tables and indexes (the version table aside), in name order, its
    whitespace normalised (a column added by ALTER TABLE is kept as ``\n, col ...)`` in SQLite's text)."""
    with sqlite3.connect(path) as conn:
        return [
            re.sub(r"\s*([,()])\s*", r"\1", re.sub(r"\s+", " ", sql))
            for (sql,) in conn.execute(
                f"SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name != '{VERSION_TABLE}' ORDER BY name"
            )
        ]


def version_rows(url: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    engine.dispose()
    return rows


def upgrade_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "flows.store"]


@pytest.fixture(autouse=True)
def store_log(caplog):
    caplog.set_level(logging.INFO, logger="flows.store")


class TestNewStore:
    def test_a_new_store_is_created_at_head_with_one_log_line_and_none_when_current(self, tmp_path, caplog):
        """Opening an empty database upgrades it to the head, saying so once; opening it again says nothing."""
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
        with TaskStore(url) as store:
            assert store.db.upgraded == (None, SHIPPED.head)
        assert upgrade_lines(caplog) == [
            f"the task store {url} was upgraded from an empty database to revision {SHIPPED.head}"
        ]
        caplog.clear()
        with TaskStore(url) as store:
            assert store.db.upgraded is None
        assert upgrade_lines(caplog) == []
        assert version_rows(url) == [SHIPPED.head]

    def test_the_revisions_make_the_tables_schema_py_describes(self, tmp_path):
        """A store made by the migrations has exactly the DDL ``metadata.create_all`` gives schema.py's tables."""
        TaskStore(f"sqlite:///{tmp_path / 'migrated.db'}").close()
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'created.db'}")
        metadata.create_all(engine)
        engine.dispose()
        assert schema_sql(tmp_path / "migrated.db") == schema_sql(tmp_path / "created.db")

    def test_revision_0001_is_the_schema_0_1_0_made(self, tmp_path):
        """The baseline revision's DDL is the 0.1.0 store's, statement for statement."""
        from alembic import command
        from alembic.config import Config

        engine = sa.create_engine(f"sqlite:///{tmp_path / 'baseline.db'}")
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(SHIPPED.location))
            config.attributes["connection"] = conn
            command.upgrade(config, BASELINE)
        engine.dispose()
        load_0_1_0(tmp_path / "old.db")
        assert schema_sql(tmp_path / "baseline.db") == schema_sql(tmp_path / "old.db")

    def test_the_revision_files_are_one_line_of_alembic_history(self):
        """Each file's revision is its NNNN prefix, each revises the one before, and Alembic's head is ours."""
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(SHIPPED.location))
        history = list(reversed(list(script.walk_revisions())))
        assert [s.revision for s in history] == list(SHIPPED.revisions)
        assert [s.down_revision for s in history] == [None, *SHIPPED.revisions[:-1]]
        assert [Path(s.path).name[:4] for s in history] == list(SHIPPED.revisions)
        assert script.get_current_head() == SHIPPED.head


class TestStoreFrom0_1_0:
    def test_it_is_upgraded_in_place_keeping_every_row(self, tmp_path, caplog):
        """Tasks, subtasks, logs, locks, the lease, snapshots and agent statuses stay row for row; one log line."""
        url = load_0_1_0(tmp_path / "tasks.db")
        engine = sa.create_engine(url)
        before = every_row(engine)
        assert all(before[table] for table in TABLES), "the fixture has rows in every table"
        with TaskStore(url) as store:
            assert store.db.upgraded == ("unversioned", SHIPPED.head)
            after = every_row(engine)
            assert {row.pop("template") for row in after["tasks"]} == {"batch_restart"}  # revision 0002's default
            assert after == before
            running = store.load(3)
            assert running.task.status == "RUNNING" and running.task.runner == "pid 4242 on fixture-host [0a1b2c3d]"
            assert running.task.lease_until == before["tasks"][2]["lease_until"] > time.time() + 86400 * 365
            assert {s.status.value for s in running.subtasks} >= {"SUCCESSFUL", "RUNNING", "CANCELING", "PENDING"}
            assert store.locks() == {4: 3, 5: 3}
            offline = before["host_agent_status"][2]
            assert store.host_agent_status(3) == AgentStatus(status="OFFLINE", updated=offline["updated"])
            assert store.snapshot(1, 2, "after") == {"ocp_agentd": 302, "ocp_mgragent": 402}
            failed = next(s for s in store.load(2).subtasks if s.status == "FAILED")
            assert "ssh: connect to host 3: Connection refused" in store.log(failed.id)
        engine.dispose()
        assert upgrade_lines(caplog) == [
            f"the task store {url} was upgraded from a store made before migrations "
            f"(revision {BASELINE}'s tables) to revision {SHIPPED.head}"
        ]
        assert version_rows(url) == [SHIPPED.head]

    def test_new_ids_continue_after_the_old_ones(self, tmp_path):
        """A new task, its subtasks and log lines get ids past every old one, even the pruned last task's."""
        url = load_0_1_0(tmp_path / "tasks.db")
        with sqlite3.connect(tmp_path / "tasks.db") as conn:
            sequence = dict(conn.execute("SELECT name, seq FROM sqlite_sequence"))
            last_log = conn.execute("SELECT max(id) FROM subtask_logs").fetchone()[0]
        with TaskStore(url) as store:
            task_id = store.create_task(build_plan([9]), creator="admin", executor="10.0.0.1")
            assert task_id == sequence["tasks"] + 1 == 5, "the pruned task 4's id is not reused"
            assert min(s.id for s in store.load(task_id).subtasks) == sequence["subtasks"] + 1
            sub = store.load(task_id).subtasks[0].id
            store.append_logs([(sub, "a new line")])
            with store.engine.connect() as conn:
                new_log = conn.execute(sa.text(f"SELECT id FROM subtask_logs WHERE subtask_id = {sub}")).scalar()
            assert new_log > last_log

    def test_a_store_that_never_used_the_host_filter_gets_its_index(self, tmp_path):
        """0.1.0 added ix_subtasks_host_id on the filter's first use; the upgrade adds it where it is missing."""
        url = load_0_1_0(tmp_path / "tasks.db")
        with sqlite3.connect(tmp_path / "tasks.db") as conn:
            conn.execute("DROP INDEX ix_subtasks_host_id")
        TaskStore(url).close()
        assert schema_sql(tmp_path / "tasks.db") == schema_sql(_fresh(tmp_path))


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.db"
    TaskStore(f"sqlite:///{path}").close()
    return path


NEXT = f"{int(SHIPPED.head) + 1:04d}"  # the revision a later ocp-restart would add


class TestAnotherRevision:
    @pytest.fixture
    def with_0002(self, tmp_path) -> Migrations:
        """The shipped revisions and the next one (an index), as a later ocp-restart would ship them."""
        location = tmp_path / "migrations"
        shutil.copytree(SHIPPED.location, location, ignore=shutil.ignore_patterns("__pycache__"))
        (location / "versions" / f"{NEXT}_snapshots_by_host.py").write_text(
            f'"""Snapshots by host."""\nfrom alembic import op\n\nrevision = "{NEXT}"\n'
            f'down_revision = "{SHIPPED.head}"\n\n\n'
            'def upgrade():\n    op.create_index("ix_host_snapshots_host_id", "host_snapshots", ["host_id"])\n'
        )
        return Migrations(location)

    def test_a_store_is_upgraded_to_it_in_place_with_one_log_line(self, tmp_path, caplog, with_0002):
        """A store at the shipped head goes to the next revision when it is given, its rows kept; the line names
        both."""
        url = load_0_1_0(tmp_path / "tasks.db")
        TaskStore(url).close()
        before = every_row(sa.create_engine(url))
        caplog.clear()
        db = Database(url, with_0002)
        db.close()
        assert db.upgraded == (SHIPPED.head, NEXT)
        assert upgrade_lines(caplog) == [
            f"the task store {url} was upgraded from revision {SHIPPED.head} to revision {NEXT}"
        ]
        assert version_rows(url) == [NEXT] and every_row(sa.create_engine(url)) == before
        with sqlite3.connect(tmp_path / "tasks.db") as conn:
            assert conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'ix_host_snapshots_host_id'").fetchone()

    def test_a_store_newer_than_the_code_is_refused_and_left_alone(self, tmp_path, with_0002):
        """This code refuses a store at a revision after its head: StoreVersionError, a StoreUnavailableError naming
        both."""
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
        Database(url, with_0002).close()
        with pytest.raises(StoreVersionError) as refused:
            TaskStore(url)
        assert isinstance(refused.value, StoreUnavailableError)
        assert str(refused.value) == (
            f"the task store {url} is at schema revision {NEXT}, newer than this ocp-restart "
            f"(head {SHIPPED.head}): upgrade ocp-restart"
        )
        assert version_rows(url) == [NEXT]


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


def test_processes_opening_a_new_store_at_once_all_succeed_and_one_upgrades(tmp_path):
    """Three processes open the same empty file at the same moment: the write lock serialises the upgrade; the others
    find it done."""
    url, go = f"sqlite:///{tmp_path / 'tasks.db'}", tmp_path / "go"
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
    assert version_rows(url) == [SHIPPED.head]


class TestCommands:
    @pytest.fixture(autouse=True)
    def quiet_prefect(self, monkeypatch):
        """main() in this process, where Prefect may be imported already: its console settings are set beforehand,
        as the CLI sets them (deployments/prefect_env.py refuses to write them after the import)."""
        monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
        monkeypatch.setenv("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")

    def test_db_current_changes_nothing_and_db_upgrade_upgrades(self, tmp_path, monkeypatch, capsys):
        """``db current`` names the 0.1.0 store's state and the head, leaving it unversioned; ``db upgrade`` upgrades
        it; then ``db current`` says current."""
        from deployments.cli import main

        url = load_0_1_0(tmp_path / "tasks.db")
        monkeypatch.setenv("OCP_RESTART_STORE_URL", url)
        assert main(["db", "current"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"task store {url}: a store made before migrations (revision {BASELINE}'s tables) (behind: "
            "`ocp-restart db upgrade` (or any command) upgrades it)",
            f"this ocp-restart: revision {SHIPPED.head} (head)",
        ]
        with sqlite3.connect(tmp_path / "tasks.db") as conn:
            assert not conn.execute(f"SELECT 1 FROM sqlite_master WHERE name = '{VERSION_TABLE}'").fetchone()
        assert main(["db", "upgrade"]) == 0
        assert capsys.readouterr().err.strip() == (
            f"the task store {url}: upgraded from a store made before migrations (revision {BASELINE}'s tables) to "
            f"revision {SHIPPED.head}"
        )
        assert main(["db", "upgrade"]) == 0
        assert capsys.readouterr().err.strip() == f"the task store {url}: already at revision {SHIPPED.head}"
        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == f"task store {url}: revision {SHIPPED.head} (current)"

    def test_a_newer_store_is_exit_5_naming_both_revisions(self, tmp_path, monkeypatch, capsys):
        """Any command on a store newer than the code: exit 5 (store unavailable) and the refusal on stderr."""
        from deployments.cli import main

        url = f"sqlite:///{tmp_path / 'tasks.db'}"
        TaskStore(url).close()
        with sa.create_engine(url).begin() as conn:
            conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
        monkeypatch.setenv("OCP_RESTART_STORE_URL", url)
        assert main(["status", "1"]) == 5
        assert capsys.readouterr().err.strip() == (
            f"ocp-restart: error: the task store {url} is at schema revision 0099, newer than this ocp-restart "
            f"(head {SHIPPED.head}): upgrade ocp-restart"
        )
        assert main(["db", "current"]) == 0
        assert capsys.readouterr().out.splitlines()[0] == (
            f"task store {url}: revision 0099 (newer than this ocp-restart: upgrade ocp-restart)"
        )
