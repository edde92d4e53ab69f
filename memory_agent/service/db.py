"""The service's own tables (API keys and ingestion jobs), beside the store: SQLite or PostgreSQL.

For a store folder they live in ``service.db`` in that folder; for a
PostgreSQL store, in the same database (tables ``keys`` and ``jobs``). Why not
in ``memory_store``: the store stays a pure memory store that knows nothing of
tenants or jobs. Why the store's own database engine with its crash rules
(SQLite WAL, or PostgreSQL): a job acknowledged with 202 survives a killed
process. Exactly-once application does not depend on these tables: each
turn's receipt is written in the *store's* transaction (``Memory.add(receipt=)``).

Both classes offer the same four things: ``txn()`` (a write transaction whose
``execute(sql, params)`` takes ``?`` placeholders), ``read(sql, params)``,
``acquire_service_lock()`` (one running service per store: a second would run
the same jobs) and ``close()``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memory_store import is_postgres_url
from memory_store.errors import StoreError
from memory_store.private import open_private, private_file, private_folder

__all__ = ["SERVICE_DB", "ServiceDB", "PgServiceDB", "open_service_db"]

SERVICE_DB = "service.db"
_SERVICE_LOCK_ID = 0x6D656D6F  # the PostgreSQL advisory lock of a running service ("memo"), per schema


def _ddl(serial: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS keys (
            id {serial},
            name TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        f"""CREATE TABLE IF NOT EXISTS jobs (
            seq {serial},
            job_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            user_name TEXT NOT NULL,
            idem TEXT,
            payload TEXT NOT NULL,
            turns INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            result TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (tenant, idem)
        )""",
        "CREATE INDEX IF NOT EXISTS idx_jobs_open ON jobs(status, seq)",
        "CREATE INDEX IF NOT EXISTS idx_jobs_user ON jobs(tenant, user_name, seq)",
    )


class ServiceDB:
    """``service.db`` in a store folder: one connection shared by the service's threads, under a lock."""

    def __init__(self, folder: str | Path, *, create: bool = True):
        folder = Path(folder)
        path = folder / SERVICE_DB
        if not create and not path.is_file():
            raise StoreError(f"no service database at {path} (memory-agent keys create makes one)")
        try:
            private_folder(folder)  # 0700, as a store folder
        except OSError as exc:
            raise StoreError(f"cannot create the folder {folder}: {exc}") from exc
        for name in (SERVICE_DB, SERVICE_DB + "-wal", SERVICE_DB + "-shm"):
            if (folder / name).is_symlink():  # SQLite would follow it (see memory_store.private)
                raise StoreError(f"{folder / name} is a symbolic link; refusing to open it")
        private_file(path)
        try:
            self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            for ddl in _ddl("INTEGER PRIMARY KEY AUTOINCREMENT"):
                self.conn.execute(ddl)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the service database {path}: {exc}") from exc
        self.folder = folder
        self.lock = threading.RLock()
        self._lockfile: Any = None

    @contextmanager
    def txn(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock; rolled back on any exception."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def acquire_service_lock(self) -> None:
        import fcntl

        self._lockfile = open_private(self.folder / "service.lock", "a")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            self._lockfile = None
            raise StoreError(f"another memory service is already running on {self.folder}") from None

    def close(self) -> None:
        with self.lock:
            self.conn.close()
            if self._lockfile is not None:
                self._lockfile.close()  # releases the lock
                self._lockfile = None


class _PgExec:
    """``execute(sql, params)`` with SQLite's ``?`` placeholders on a psycopg connection."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, params: tuple | list = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)


class PgServiceDB:
    """The service tables in the store's PostgreSQL database: one connection, under a lock.

    The service's own traffic is small (a key lookup is cached, a job row is
    written a few times): one connection is enough, and the lock keeps
    psycopg's one-transaction-per-connection rule.
    """

    def __init__(self, url: str):
        import psycopg  # the postgres extra: only when a PostgreSQL store is served

        from memory_store import pg_schema

        self.where = pg_schema.redact(url)
        self.conn = pg_schema.connect(url)
        self.conn.autocommit = True
        self.lock = threading.RLock()
        try:
            with self.conn.transaction():
                for ddl in _ddl("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"):
                    self.conn.execute(ddl)
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"cannot create the service tables in {self.where}: {type(exc).__name__}") from None

    @contextmanager
    def txn(self) -> Iterator[_PgExec]:
        with self.lock, self.conn.transaction():
            yield _PgExec(self.conn)

    def read(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        with self.lock:
            return _PgExec(self.conn).execute(sql, params).fetchall()

    def acquire_service_lock(self) -> None:
        # session-level: held while this connection lives, released if the process dies
        if not self.read("SELECT pg_try_advisory_lock(?, hashtext(current_schema()))", [_SERVICE_LOCK_ID])[0][0]:
            raise StoreError(f"another memory service is already running on {self.where}")

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def open_service_db(location: str | Path, *, create: bool = True) -> ServiceDB | PgServiceDB:
    """The service tables of the store at ``location``: a folder path or a PostgreSQL URL."""
    if is_postgres_url(location):
        return PgServiceDB(str(location))
    return ServiceDB(location, create=create)
