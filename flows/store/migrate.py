"""Bringing a task store's schema to this code's revision, with Alembic (the revisions are in ``migrations/``).

Opening a store reads its revision; only a store behind the code is upgraded, in one transaction, under a lock that
serialises the processes opening it at once (SQLite: its write lock, taken before the revision is read again;
PostgreSQL: an advisory lock), so the second finds it upgraded and does nothing. A store made before migrations (the
tables, no version table) has revision 0001's schema: it is stamped 0001, then upgraded. A store at a revision this
code does not know was upgraded by a newer ocp-restart: it is refused, never changed.

A new revision: ``migrations/versions/NNNN_what.py`` with ``revision = "NNNN"`` and ``down_revision`` the previous
one, and ``schema.py`` changed to match (a test compares them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreVersionError

log = logging.getLogger(__package__)

# Not Alembic's default "alembic_version": the store may share a PostgreSQL database with Prefect's server, whose own
# Alembic revisions live there.
VERSION_TABLE = "task_store_version"
BASELINE = "0001"  # the schema of ocp-restart 0.1.0, the last made without migrations
UNVERSIONED = "unversioned"  # what stored_revision says of a store made before migrations
_PG_LOCK = 0x6F63_7072_7374_6F72  # pg_advisory_xact_lock's key ("ocprstor"): taken only by store upgrades
_REVISION_FILE = re.compile(r"(\d{4})_\w+\.py")

# Upgrade: (the revision a store was at, or UNVERSIONED, or None for an empty database; the revision it is now at).
Upgrade = tuple[str | None, str]


@dataclass(frozen=True)
class Migrations:
    """The revisions in ``location`` (a directory holding env.py and versions/); by default the ones shipped here."""

    location: Path = Path(__file__).with_name("migrations")

    @cached_property
    def revisions(self) -> tuple[str, ...]:
        """Oldest first, from the file names: checking a store costs no import of Alembic (~0.1 s)."""
        found = (_REVISION_FILE.fullmatch(path.name) for path in (self.location / "versions").iterdir())
        return tuple(sorted(match.group(1) for match in found if match))

    @property
    def head(self) -> str:
        return self.revisions[-1]

    def upgrade(self, engine: Engine, name: str) -> Upgrade | None:
        """Bring the store on ``engine`` to ``head``: (from, to) if this call upgraded it, None if it was current.
        ``name``: the store in messages (its URL without password). Raises StoreVersionError for a newer store."""
        with engine.connect() as conn:
            found = stored_revision(conn)
        if found == self.head:
            return None
        self._check(found, name)
        with _exclusive(engine) as conn:
            found = stored_revision(conn)  # again, under the lock: another process may have upgraded it meanwhile
            if found == self.head:
                return None
            self._check(found, name)
            self._run(conn, found)
        log.info("the task store %s was upgraded from %s to revision %s", name, describe(found), self.head)
        return found, self.head

    def knows(self, found: str | None) -> bool:
        """Whether a store at ``found`` (see stored_revision) can be upgraded to ``head``; if not, it is newer."""
        return found in (None, UNVERSIONED) or found in self.revisions

    def _check(self, found: str | None, name: str) -> None:
        if not self.knows(found):
            raise StoreVersionError(
                f"the task store {name} is at schema revision {found}, newer than this "
                f"ocp-restart (head {self.head}): upgrade ocp-restart"
            )

    def _run(self, conn: Connection, found: str | None) -> None:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(self.location))
        config.attributes["connection"] = conn  # env.py runs the revisions on it, inside our transaction
        if found == UNVERSIONED:
            # 0.1.0 added the host filter's index on the filter's first use: a store never filtered lacks it.
            conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_subtasks_host_id ON subtasks (host_id)"))
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


SHIPPED = Migrations()


def stored_revision(conn: Connection) -> str | None:
    """The store's schema revision; UNVERSIONED for a store made before migrations; None for an empty database."""
    tables = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE in tables:
        return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return UNVERSIONED if "tasks" in tables else None


def describe(revision: str | None) -> str:
    """A stored revision in words, for messages."""
    if revision is None:
        return "an empty database"
    if revision == UNVERSIONED:
        return f"a store made before migrations (revision {BASELINE}'s tables)"
    return f"revision {revision}"


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """A transaction that no other process upgrading the store runs at the same time; committed if no error."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # the database's one write lock, waited for (busy timeout)
        elif engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})  # released at commit
        yield conn
        conn.commit()
