"""PostgreSQL schema of the store, its versioned migrations, and connecting without leaking secrets.

Imported only by :mod:`memory_store.postgres` (it imports psycopg): ``import
memory_store`` stays free of it.

Tables (the same columns as the SQLite store, see :mod:`memory_store.schema`):

* ``meta(key, value)``: schema_version, dim, db_uuid, created_at, index_kind.
* ``memories``: bigint id from the sequence ``memory_ids`` (never reused),
  user_id, text, created_at, updated_at (ISO text, as written), metadata (the
  canonical JSON text), hash, ``embedding vector(dim)``; derived and kept by
  PostgreSQL itself: ``meta_json`` (jsonb of metadata, what filters read) and
  ``tsv`` (the keyword index document: a generated ``tsvector``).
* ``history``: every ADD/UPDATE/DELETE with old/new text, actor, source, time.
* ``receipts(user_id, key, at)``: exactly-once writes.

Keyword search uses the text search configuration ``memory_search``: English
Snowball stemming *without* a stop-word list (as SQLite's porter tokenizer,
stop words are dropped from queries instead), numbers and other tokens kept
as they are, and diacritics folded by ``memory_fold`` (Unicode NFD minus the
combining marks U+0300-U+036F), so "café" finds "cafe" without the
``unaccent`` extension. The document is the first 100,000 characters of a
memory (PostgreSQL caps one tsvector at 1 MB).

Migrations are an append-only list; each runs in the one transaction that
also records the new version, under a transaction-scoped advisory lock, so
two processes opening a fresh database at once cannot both migrate.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from memory_store.errors import SchemaTooNew, StoreError

__all__ = ["SCHEMA_VERSION", "MIGRATIONS", "redact", "scrub", "connect_kwargs", "connect",
           "migrate", "get_meta", "set_meta"]

CONNECT_TIMEOUT_S = 10
_LOCK_KEY = 0x6D656D6F7279  # pg_advisory_xact_lock key of this schema's migrations ("memory")
TSV_CHARS = 100_000


def _v1(cur: psycopg.Cursor, dim: int) -> None:
    cur.execute("CREATE SEQUENCE memory_ids")
    cur.execute(r"""CREATE FUNCTION memory_fold(t text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
                    AS $$ SELECT regexp_replace(normalize(t, NFD), '[\u0300-\u036f]', '', 'g') $$""")
    cur.execute("CREATE TEXT SEARCH DICTIONARY memory_stem (TEMPLATE = snowball, Language = english)")
    cur.execute("CREATE TEXT SEARCH CONFIGURATION memory_search (COPY = simple)")
    cur.execute("ALTER TEXT SEARCH CONFIGURATION memory_search ALTER MAPPING FOR asciiword, asciihword,"
                " hword_asciipart, word, hword, hword_part WITH memory_stem")
    cur.execute(f"""CREATE TABLE memories (
        id BIGINT PRIMARY KEY DEFAULT nextval('memory_ids'),
        user_id TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{{}}',
        hash TEXT NOT NULL,
        embedding vector({int(dim)}) NOT NULL,
        meta_json JSONB GENERATED ALWAYS AS (metadata::jsonb) STORED,
        tsv TSVECTOR GENERATED ALWAYS AS
            (to_tsvector('memory_search'::regconfig, memory_fold(left(text, {TSV_CHARS})))) STORED
    )""")
    cur.execute("ALTER SEQUENCE memory_ids OWNED BY memories.id")
    cur.execute("CREATE INDEX memories_user ON memories (user_id, id)")
    cur.execute("CREATE INDEX memories_hash ON memories (user_id, hash)")
    cur.execute("CREATE INDEX memories_tsv ON memories USING gin (tsv)")
    cur.execute("""CREATE TABLE history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        memory_id BIGINT NOT NULL,
        user_id TEXT NOT NULL,
        event TEXT NOT NULL CHECK (event IN ('ADD', 'UPDATE', 'DELETE')),
        old_text TEXT,
        new_text TEXT,
        actor TEXT NOT NULL,
        source TEXT,
        at TEXT NOT NULL
    )""")
    cur.execute("CREATE INDEX history_memory ON history (memory_id, id)")
    cur.execute("CREATE TABLE receipts (user_id TEXT NOT NULL, key TEXT NOT NULL, at TEXT NOT NULL,"
                " PRIMARY KEY (user_id, key))")


# Append-only: migration i (1-based) brings the schema from version i-1 to i.
MIGRATIONS: list[Callable[[psycopg.Cursor, int], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


# ---- URLs and secrets -------------------------------------------------------------------

def _password(url: str) -> str | None:
    try:
        return conninfo_to_dict(url).get("password") or None
    except psycopg.Error:
        m = re.search(r"://[^/@:]*:([^@/]*)@", url) or re.search(r"password\s*=\s*([^&\s]+)", url)
        return m.group(1) if m else None


def redact(url: str) -> str:
    """The URL as safe to print: ``postgresql://user@host:port/db``, never the password."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.Error:
        return re.sub(r"(://[^/@:]*):[^@/]*@", r"\1:***@", re.sub(r"password\s*=\s*[^&\s]+", "password=***", url))
    host = d.get("host") or os.environ.get("PGHOST") or "localhost"
    user = d.get("user") or os.environ.get("PGUSER") or ""
    port = d.get("port") or os.environ.get("PGPORT") or ""
    db = d.get("dbname") or os.environ.get("PGDATABASE") or ""
    if host.startswith("/"):  # a Unix socket folder
        return f"postgresql://{user + '@' if user else ''}/{db}?host={host}"
    return f"postgresql://{user + '@' if user else ''}{host}{':' + port if port else ''}/{db}"


def scrub(message: str, url: str) -> str:
    """``message`` with the URL's (or $PGPASSWORD's) password and the raw URL replaced."""
    out = message.replace(url, redact(url)) if url else message
    for secret in (_password(url), os.environ.get("PGPASSWORD")):
        if secret:
            out = out.replace(secret, "***")
    return out


def connect_kwargs(url: str) -> dict[str, Any]:
    """Extra libpq settings: a connect timeout unless the URL or $PGCONNECT_TIMEOUT sets one."""
    kwargs: dict[str, Any] = {"application_name": "memory-agent"}
    if "connect_timeout" not in conninfo_to_dict(url) and not os.environ.get("PGCONNECT_TIMEOUT"):
        kwargs["connect_timeout"] = CONNECT_TIMEOUT_S
    return kwargs


def connect(url: str) -> psycopg.Connection:
    """One connection, or ONE clear ``StoreError`` (bad URL, unreachable server, refused login)."""
    where = redact(url)
    try:
        kwargs = connect_kwargs(url)
    except psycopg.Error as exc:
        # the parser's message may quote any part of the URL, the password included (in any
        # encoding): only its kind is shown
        raise StoreError(f"invalid PostgreSQL URL {where} ({type(exc).__name__}); check its syntax and "
                         "percent-encoding") from None
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        detail = " ".join(scrub(str(exc), url).split())
        raise StoreError(f"cannot connect to PostgreSQL at {where}: {detail}") from None


# ---- meta and migrations -------------------------------------------------------------------

def get_meta(cur: psycopg.Cursor, key: str) -> str | None:
    row = cur.execute("SELECT value FROM meta WHERE key = %s", [key]).fetchone()
    return None if row is None else row[0]


def set_meta(cur: psycopg.Cursor, key: str, value: str) -> None:
    cur.execute("INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value])


def _version(cur: psycopg.Cursor) -> int:
    if cur.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
        return 0
    found = get_meta(cur, "schema_version")
    return int(found) if found else 0


def _ensure_vector(cur: psycopg.Cursor) -> None:
    if cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
        return
    try:
        with cur.connection.transaction():  # a savepoint: the error below leaves the migration usable
            cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError("the pgvector extension is not installed in this database and could not be created "
                         f"({exc.diag.message_primary or exc}); run CREATE EXTENSION vector as a superuser") from None


def migrate(conn: psycopg.Connection, dim: int | None) -> int:
    """Bring the schema to SCHEMA_VERSION in one transaction; return the store's recorded dim.

    Raises ``SchemaTooNew`` if a newer library wrote the database, and ``StoreError``
    for a new store without a width (``dim=None``) before creating anything.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        if cur.execute("SHOW server_encoding").fetchone()[0].upper() not in ("UTF8", "UTF-8"):
            raise StoreError("the store's database must use the UTF8 encoding (CREATE DATABASE ... ENCODING 'UTF8')")
        found = _version(cur)
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(f"store schema version {found} is newer than this library's {SCHEMA_VERSION}")
        recorded = get_meta(cur, "dim") if found else None
        if recorded is None and dim is None:
            raise StoreError("a new store needs an embedder or dim= to fix its vector width")
        width = int(recorded) if recorded is not None else int(dim)  # type: ignore[arg-type]
        if found < SCHEMA_VERSION:
            _ensure_vector(cur)
            cur.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for version in range(found + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](cur, width)
                set_meta(cur, "schema_version", str(version))
            if get_meta(cur, "db_uuid") is None:
                set_meta(cur, "db_uuid", uuid.uuid4().hex)
                set_meta(cur, "created_at", datetime.now(timezone.utc).isoformat())
            set_meta(cur, "dim", str(width))
        return width
