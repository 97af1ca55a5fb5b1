"""The store's database: engine, transactions, and one clear error when it is unavailable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreUnavailableError
from .migrate import SHIPPED, Migrations, Upgrade

OPEN_SECONDS = 30.0  # as SQLite's busy timeout below
CONNECT_SECONDS = 5  # PostgreSQL's connect timeout


class Database:
    """An engine on ``url``; on open, the schema is upgraded to ``migrations``' head (see migrate.py), or with
    ``migrations=None`` left as it is. Thread-safe; ``close()`` disposes it."""

    def __init__(self, url: str, migrations: Migrations | None = SHIPPED) -> None:
        self.url = url
        self._sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self._sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        elif self.url.startswith("postgresql"):
            # A server that does not answer (down host, frozen postmaster) must cost a bounded wait, not a hang: the
            # API answers 503 and a run waits within its lease (#22).
            kwargs["connect_args"] = {"connect_timeout": CONNECT_SECONDS}
            kwargs["pool_pre_ping"] = True  # connections from before a server restart are dropped, not failed on
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # SQLite allows one writer; serialising our own threads avoids 'database is locked' retries.
        self._write_lock = threading.Lock() if self._sqlite else _NullLock()
        self.upgraded: Upgrade | None = None  # what opening it did to the schema: (from, to), or None
        if migrations is not None:
            try:
                self.upgraded = self._open(migrations)
            except BaseException:
                self.engine.dispose()
                raise

    def _open(self, migrations: Migrations) -> Upgrade | None:
        """Bring the schema to the code's head. Several processes opening a new SQLite file at once can meet
        SQLite's "database is locked" without its busy timeout being applied (switching the file to WAL needs it
        alone for a moment): that is retried for up to OPEN_SECONDS; any other failure is raised at once."""
        deadline = time.monotonic() + OPEN_SECONDS
        while True:
            try:
                with self.available():
                    return migrations.upgrade(self.engine, self.safe_url)
            except StoreUnavailableError as exc:
                if not self._sqlite or "database is locked" not in exc.message or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def available(self) -> Iterator[None]:
        """Database failures (server down, read-only file, disk full) become one clear error; the transaction
        they interrupted is rolled back, so nothing is half-written."""
        try:
            yield
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreUnavailableError(f"the task store {self.safe_url} is unavailable: {reason}") from None
        except sa.exc.DatabaseError as exc:
            if isinstance(exc, sa.exc.IntegrityError):
                raise
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreUnavailableError(f"the task store {self.safe_url} refused the operation: {reason}") from None

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed if no error."""
        with self.available(), self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for queries: no lock taken, nothing committed."""
        with self.available(), self.engine.connect() as conn:
            yield conn


def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (status, API) never block the flow's writes
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
