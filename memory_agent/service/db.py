"""The service's own SQLite file (``service.db`` beside the store): API keys and ingestion jobs.

Why a second file: the store stays a pure memory store (``memory_store`` knows
nothing of tenants or jobs). Why SQLite with WAL and ``synchronous=NORMAL``:
the same crash rules as memories, so a job acknowledged with 202 survives a
killed process. Exactly-once application does not depend on this file: each
turn's receipt is written in the *store's* transaction (``Memory.add(receipt=)``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memory_store.errors import StoreError
from memory_store.private import private_file, private_folder

__all__ = ["SERVICE_DB", "ServiceDB"]

SERVICE_DB = "service.db"

_DDL = (
    """CREATE TABLE IF NOT EXISTS keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        user TEXT NOT NULL,
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
    "CREATE INDEX IF NOT EXISTS idx_jobs_user ON jobs(tenant, user, seq)",
)


class ServiceDB:
    """One connection shared by the service's threads, serialised by a lock."""

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
            for ddl in _DDL:
                self.conn.execute(ddl)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the service database {path}: {exc}") from exc
        self.lock = threading.RLock()

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

    def close(self) -> None:
        with self.lock:
            self.conn.close()
