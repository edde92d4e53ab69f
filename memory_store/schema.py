"""SQLite schema of the store and its versioned migrations.

SQLite is the source of truth; the FAISS index is derived from it. The schema
version lives in ``PRAGMA user_version`` (atomic with the DDL, cheap to read)
and is mirrored in the ``meta`` table for humans. Migrations are an ordered
list of functions; each runs inside one ``BEGIN IMMEDIATE`` transaction so
two processes opening a fresh folder at once cannot both migrate.

Tables:
* ``meta(key, value)``: schema_version, dim, db_uuid, created_at.
* ``memories``: integer id (AUTOINCREMENT: ids are never reused, because the
  index, history and changes log are keyed by them), user_id, text,
  created_at, updated_at, metadata JSON, sha256 hash, float32 embedding blob.
* ``history``: every ADD/UPDATE/DELETE with old/new text, actor, source, time.
* ``changes``: one row per memory touched per commit; ``max(seq)`` is the
  change counter other processes read to detect that their index is stale.
* ``memories_fts`` (v2): the FTS5 keyword index of memory text, kept in step
  by triggers on ``memories`` (see :mod:`memory_store.keyword`).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import sqlite_utils

from memory_store import keyword
from memory_store.errors import SchemaTooNew, StoreError

__all__ = [
    "SCHEMA_VERSION",
    "DB_NAME",
    "connect",
    "migrate",
    "write_txn",
    "get_meta",
    "set_meta",
    "current_seq",
]

DB_NAME = "memories.db"
BUSY_TIMEOUT_MS = 60_000  # other processes may hold the write lock for a big batch


def _v1(db: sqlite_utils.Database) -> None:
    # Raw DDL because sqlite-utils cannot declare AUTOINCREMENT.
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        """CREATE TABLE memories (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            hash TEXT NOT NULL,
            embedding BLOB NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_memories_user ON memories(user_id, id)")
    db.execute("CREATE INDEX idx_memories_hash ON memories(user_id, hash)")
    db.execute(
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            memory_id INTEGER NOT NULL,
            user_id TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
            old_text TEXT,
            new_text TEXT,
            actor TEXT NOT NULL,
            source TEXT,
            at TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX idx_history_memory ON history(memory_id, id)")
    db.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, memory_id INTEGER NOT NULL)")


def _v2(db: sqlite_utils.Database) -> None:
    # The keyword index, filled from the rows a v1 store already holds.
    keyword.repair_fts(db.conn)


def _v3(db: sqlite_utils.Database) -> None:
    # Receipts of applied writes (exactly-once ingestion): written in the same transaction.
    db.execute("CREATE TABLE IF NOT EXISTS receipts (user_id TEXT NOT NULL, key TEXT NOT NULL, at TEXT NOT NULL,"
               " PRIMARY KEY (user_id, key)) WITHOUT ROWID")


# Append-only: migration i (1-based) brings user_version from i-1 to i.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(folder: Path) -> sqlite_utils.Database:
    """Open (creating) the folder's database: WAL, busy timeout, autocommit mode.

    ``isolation_level=None`` hands transaction control to us (explicit
    ``BEGIN IMMEDIATE``), which is what makes a batch all-or-nothing and
    avoids the lock-upgrade deadlock of deferred transactions.
    """
    try:
        conn = sqlite3.connect(str(folder / DB_NAME), timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store database in {folder}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # A read-only folder or file fails here (WAL needs its -shm/-wal files): typed, not raw sqlite3.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"could not enable WAL mode on {folder} (got {mode!r})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"cannot open the store database in {folder} (read-only or full?): {exc}") from exc
        raise
    return sqlite_utils.Database(conn)


@contextmanager
def write_txn(db: sqlite_utils.Database) -> Iterator[None]:
    """One write transaction: commit on success, roll back on any exception."""
    conn = db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:  # busy past the timeout, read-only folder...
        raise StoreError(f"cannot start a write transaction: {exc}") from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:  # a failed COMMIT (disk full...) leaves the transaction open
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"write failed, nothing was changed: {exc}") from exc
        raise


def get_meta(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    return None if row is None else row[0]


def set_meta(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               [key, value])


def current_seq(db: sqlite_utils.Database) -> int:
    """The change counter: highest committed change. Cheap (rowid max lookup)."""
    row = db.execute("SELECT max(seq) FROM changes").fetchone()
    return int(row[0] or 0)


def _user_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database, dim: int | None) -> int:
    """Bring the schema to SCHEMA_VERSION; return the store's recorded dim.

    Raises ``SchemaTooNew`` before touching anything if a newer library wrote
    the folder. ``dim`` is recorded on creation; None means "whatever is
    recorded" (an error when nothing is).
    """
    found = _user_version(db)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(f"store schema version {found} is newer than this library's {SCHEMA_VERSION}")
    if found < SCHEMA_VERSION:
        with write_txn(db):
            found = _user_version(db)  # re-read under the write lock: someone may have migrated
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(f"store schema version {found} is newer than this library's {SCHEMA_VERSION}")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](db)
                db.execute(f"PRAGMA user_version = {version}")
            set_meta(db, "schema_version", str(SCHEMA_VERSION))
            if get_meta(db, "db_uuid") is None:
                set_meta(db, "db_uuid", uuid.uuid4().hex)
                set_meta(db, "created_at", datetime.now(timezone.utc).isoformat())
            if get_meta(db, "dim") is None and dim is not None:
                set_meta(db, "dim", str(int(dim)))
    recorded = get_meta(db, "dim")
    if recorded is None:
        if dim is None:
            raise StoreError("a new store needs an embedder or dim= to fix its vector width")
        with write_txn(db):
            if get_meta(db, "dim") is None:
                set_meta(db, "dim", str(int(dim)))
            recorded = get_meta(db, "dim")
    return int(recorded)
