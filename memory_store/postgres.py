"""``PostgresStore``: the store contract on PostgreSQL + pgvector, for many processes and hosts.

The same public API, validation, typed errors and ranking as
:class:`memory_store.MemoryStore`; the difference is where the truth lives
and who serialises writers. Everything is in the database: the vectors
(pgvector, exact search by default, an HNSW index with ``index="hnsw"``), the
keyword index (a generated ``tsvector`` column, see
:mod:`memory_store.pg_schema`), history and receipts, so there is no derived
index to catch up and any number of processes on any number of hosts share
one store.

Writes: every batch is ONE transaction (READ COMMITTED) that records its
receipts (``AlreadyApplied`` if one is held), locks the rows its UPDATEs and
DELETEs touch (``SELECT ... FOR UPDATE``, in id order so two batches cannot
deadlock on them), checks them against the user under that lock
(``MemoryNotFound``), then writes memories and history. Two servers updating one memory therefore queue on the
row: the second sees the first's text as its ``old_text``, nothing is lost,
and history holds both events. A writer that dies mid-transaction leaves
nothing: PostgreSQL rolls the transaction back. Deadlocks and serialisation
failures (rare: other locks) are retried.

Reads run in one REPEATABLE READ, READ ONLY transaction each, so a hybrid
search's two lists and the records they name come from one snapshot.

Connections come from a psycopg 3 pool. Credentials come from the URL or the
standard ``PG*`` environment variables (and ``~/.pgpass``) and are never
logged or shown: errors and ``repr`` carry :func:`pg_schema.redact`'s form of
the URL. A bad URL or an unreachable server raises ONE ``StoreError``.

psycopg is imported here, and this module only when a Postgres store is
opened: ``import memory_store`` does not need it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg_pool import ConnectionPool, PoolTimeout
    from pgvector.psycopg import register_vector
except ImportError as exc:  # pragma: no cover - the message is the point
    from memory_store.errors import StoreError as _StoreError

    raise _StoreError(f"PostgreSQL support needs the postgres extra: pip install 'memory-agent[postgres]' ({exc})") \
        from exc

from memory_store import pg_schema
from memory_store.opening import POSTGRES_PREFIXES, is_postgres_url
from memory_store.embedders import Embedder
from memory_store.errors import AlreadyApplied, EmbeddingDimensionMismatch, InvalidInput, MemoryNotFound, StoreError
from memory_store.filters import InvalidFilter, parse_filter, to_pg_sql
from memory_store.index import HNSW_EF_SEARCH, INDEX_KINDS
from memory_store.keyword import query_terms, ranked_search
from memory_store.plans import PlanAdd, PlanDelete, PlanStep, PlanUpdate
from memory_store.records import AppliedOp, HistoryEntry, MemoryRecord, SearchHit
from memory_store.writes import WriteMethods, applied as _applied, record as _record, sha as _sha
from memory_store.validation import (
    check_id, check_k, check_mode, check_receipts, check_text, check_user, check_vectors,
)

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

_COLS = "id, user_id, text, created_at, updated_at, metadata, hash"
_MAX_LIMIT = 2**62  # LIMIT is a bigint: a huge k means "all"
_RETRIES = 5  # attempts of a write batch that hit a deadlock or serialisation failure
_RETRY_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_HISTORY_COLS = ("id", "memory_id", "user_id", "event", "old_text", "new_text", "actor", "source", "at")


class PostgresStore(WriteMethods):
    """The memory store on PostgreSQL + pgvector; see the module docstring and docs/store.md."""

    def __init__(self, url: str, embedder: Embedder | None = None, index: str | None = None, *,
                 dim: int | None = None, pool_size: int = 4, ef_search: int = HNSW_EF_SEARCH) -> None:
        if not is_postgres_url(url):
            raise InvalidInput(f"a PostgreSQL store URL starts with {' or '.join(POSTGRES_PREFIXES)}")
        if index is not None and index not in INDEX_KINDS:
            raise InvalidInput(f"index must be one of {INDEX_KINDS}, got {index!r}")
        if embedder is not None and dim is not None and int(embedder.dim) != dim:
            raise EmbeddingDimensionMismatch(f"embedder dim {embedder.dim} != dim={dim}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidInput(f"pool_size must be an int >= 1, got {pool_size!r}")
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or not 1 <= ef_search <= 1000:
            raise InvalidInput(f"ef_search must be an int in 1..1000 (pgvector's range), got {ef_search!r}")
        self._url = url
        self.url = pg_schema.redact(url)  # safe to show
        self.path = None  # not a folder
        self.embedder = embedder
        self.ef_search = ef_search
        self._closed = False
        want = int(embedder.dim) if embedder is not None else dim
        conn = pg_schema.connect(url)
        try:
            with self._errors():
                self.dim = pg_schema.migrate(conn, want)
                if want is not None and want != self.dim:
                    raise EmbeddingDimensionMismatch(f"store {self.url} has dim {self.dim}, embedder/dim gives {want}")
                self.index_kind = self._choose_index(conn, index)
        finally:
            conn.close()
        self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, kwargs=pg_schema.connect_kwargs(url),
                                    configure=_configure, check=ConnectionPool.check_connection, open=False,
                                    name="memory-store")
        try:
            self._pool.open(wait=True, timeout=30)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot open a connection pool to PostgreSQL at {self.url}") from None

    def _choose_index(self, conn: psycopg.Connection, index: str | None) -> str:
        """index=None: the kind last recorded (else flat). hnsw builds the index once (it blocks writes meanwhile)."""
        with conn.transaction(), conn.cursor() as cur:
            recorded = pg_schema.get_meta(cur, "index_kind")
            kind = index or (recorded if recorded in INDEX_KINDS else "flat")
            if kind == "hnsw":
                cur.execute("CREATE INDEX IF NOT EXISTS memories_embedding_hnsw ON memories"
                            " USING hnsw (embedding vector_ip_ops)")
            if recorded != kind:
                pg_schema.set_meta(cur, "index_kind", kind)
        return kind

    # ---- plumbing -------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, index={self.index_kind!r}, dim={self.dim})"

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    @contextmanager
    def _errors(self, flt: Any = None) -> Iterator[None]:
        """psycopg's errors as the store's typed ones, with the password never in a message."""
        try:
            yield
        except (StoreError, InvalidInput, MemoryNotFound, AlreadyApplied):
            raise
        except PoolTimeout as exc:
            raise StoreError(f"no PostgreSQL connection free or reachable at {self.url}: "
                             f"{pg_schema.scrub(str(exc), self._url)}") from None
        except psycopg.DataError as exc:
            if flt is not None:
                raise InvalidFilter(f"the filter cannot be evaluated: {exc.diag.message_primary or exc}", flt) from None
            # NUL characters, values PostgreSQL cannot hold: refused, and the transaction rolled back
            raise InvalidInput(f"PostgreSQL refused a value: {pg_schema.scrub(str(exc), self._url)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error at {self.url}: {pg_schema.scrub(str(exc), self._url)}") from None

    @contextmanager
    def _conn(self, flt: Any = None) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise StoreError("store is closed")
        with self._errors(flt), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _read(self, flt: Any = None) -> Iterator[psycopg.Cursor]:
        """One read-only snapshot (REPEATABLE READ) on a pooled connection."""
        with self._conn(flt) as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise StoreError("this store was opened without an embedder: pass embeddings/vectors instead")
        return check_vectors(self.embedder.embed(texts), len(texts), self.dim)

    # ---- the one write path -----------------------------------------------------------

    def _commit(self, user_id: str, plan: list[PlanStep], actor: str, source: str | None,
                ts: str, receipts: Sequence[str] = ()) -> tuple[list[AppliedOp], dict[int, tuple]]:
        """Apply a validated plan (see :mod:`memory_store.plans`) in ONE transaction.

        Returns the applied ops and the rows of updated/deleted ids as they were
        before the batch (read under their row locks).
        """
        attempt = 0
        with self._conn() as conn:
            while True:
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        return self._write(cur, user_id, plan, actor, source, ts, receipts)
                except _RETRY_ERRORS as exc:  # rolled back: nothing of this attempt is left
                    attempt += 1
                    if attempt >= _RETRIES:
                        raise
                    log.info("write batch retried after %s", type(exc).__name__)

    def _write(self, cur: psycopg.Cursor, user_id: str, plan: list[PlanStep], actor: str, source: str | None,
               ts: str, receipts: Sequence[str]) -> tuple[list[AppliedOp], dict[int, tuple]]:
        self._record_receipts(cur, user_id, receipts, ts)  # first, as in MemoryStore: a retried batch is AlreadyApplied
        wanted = sorted({p.id for p in plan if isinstance(p, (PlanUpdate, PlanDelete))})
        before: dict[int, tuple] = {}
        if wanted:  # lock in id order: two batches never wait on each other in a cycle
            for r in cur.execute(f"SELECT {_COLS} FROM memories WHERE user_id = %s AND id = ANY(%s)"
                                 " ORDER BY id FOR UPDATE", [user_id, wanted]):
                before[r[0]] = tuple(r)
        for mid in wanted:
            if mid not in before:
                raise MemoryNotFound(mid, user_id)
        n_add = sum(1 for p in plan if isinstance(p, PlanAdd))
        if n_add:
            # what INSERT takes anyway, but before the ids are drawn: an import (SHARE ROW EXCLUSIVE)
            # then waits for this batch, or this batch for the import, never an id handed out twice
            cur.execute("LOCK TABLE memories IN ROW EXCLUSIVE MODE")
        new_ids = iter([r[0] for r in cur.execute(
            "SELECT nextval('memory_ids') AS id FROM generate_series(1, %s) ORDER BY id", [n_add])] if n_add else [])
        current = {mid: r[2] for mid, r in before.items()}
        inserts, updates, deletes, history, applied = [], [], [], [], []
        for p in plan:
            if isinstance(p, PlanAdd):
                text, meta, vec, created = p
                mid = next(new_ids)
                inserts.append((mid, user_id, text, created, created, meta, _sha(text), vec))
                history.append((mid, user_id, "ADD", None, text, actor, source, created))
                applied.append(_applied("ADD", mid, None, text))
            elif isinstance(p, PlanUpdate):
                mid, text, vec = p
                updates.append((text, _sha(text), vec, ts, mid, user_id))
                history.append((mid, user_id, "UPDATE", current[mid], text, actor, source, ts))
                applied.append(_applied("UPDATE", mid, current[mid], text))
                current[mid] = text
            elif isinstance(p, PlanDelete):
                mid = p.id
                deletes.append((mid, user_id))
                history.append((mid, user_id, "DELETE", current[mid], None, actor, source, ts))
                applied.append(_applied("DELETE", mid, current[mid], None))
            else:
                applied.append(_applied("NOOP", None, None, None))
        if inserts:
            cur.executemany("INSERT INTO memories (id, user_id, text, created_at, updated_at, metadata, hash,"
                            " embedding) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", inserts)
        if updates:
            cur.executemany("UPDATE memories SET text = %s, hash = %s, embedding = %s, updated_at = %s"
                            " WHERE id = %s AND user_id = %s", updates)
        if deletes:
            cur.executemany("DELETE FROM memories WHERE id = %s AND user_id = %s", deletes)
        if history:
            cur.executemany("INSERT INTO history (memory_id, user_id, event, old_text, new_text, actor, source, at)"
                            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", history)
        return applied, before

    def _record_receipts(self, cur: psycopg.Cursor, user_id: str, receipts: Sequence[str], ts: str) -> None:
        if not receipts:
            return
        # A concurrent holder of the same key makes this wait for its commit, then conflict.
        fresh = {r[0] for r in cur.execute(
            "INSERT INTO receipts (user_id, key, at) SELECT %s, k, %s FROM unnest(%s::text[]) AS k"
            " ON CONFLICT DO NOTHING RETURNING key", [user_id, ts, sorted(receipts)])}  # sorted: no lock cycles
        held = set(receipts) - fresh
        if held:
            raise AlreadyApplied(sorted(held), user_id)

    # ---- writes --------------------------------------------------------------------

    def receipts(self, user_id: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` this user's store already holds (see :meth:`apply`)."""
        user_id, keys = check_user(user_id), check_receipts(keys)
        if not keys:
            return set()
        with self._read() as cur:
            return {r[0] for r in cur.execute("SELECT key FROM receipts WHERE user_id = %s AND key = ANY(%s::text[])",
                                              [user_id, keys])}

    # ---- reads ---------------------------------------------------------------------

    def get(self, memory_id: int, user_id: str) -> MemoryRecord:
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._read() as cur:
            row = cur.execute(f"SELECT {_COLS} FROM memories WHERE id = %s AND user_id = %s", [mid, user_id]).fetchone()
        if row is None:
            raise MemoryNotFound(mid, user_id)
        return _record(row)

    def list(self, user_id: str) -> list[MemoryRecord]:
        """All of the user's memories, oldest first (created_at, then id)."""
        user_id = check_user(user_id)
        with self._read() as cur:
            rows = cur.execute(f'SELECT {_COLS} FROM memories WHERE user_id = %s ORDER BY created_at COLLATE "C", id',
                               [user_id]).fetchall()
        return [_record(r) for r in rows]

    def history(self, memory_id: int, user_id: str) -> list[HistoryEntry]:
        """Events of one memory (also after its deletion), oldest first."""
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._read() as cur:
            rows = cur.execute(f"SELECT {', '.join(_HISTORY_COLS)} FROM history WHERE memory_id = %s AND user_id = %s"
                               " ORDER BY id", [mid, user_id]).fetchall()
        if not rows:
            raise MemoryNotFound(mid, user_id)
        return [HistoryEntry.model_construct(**dict(zip(_HISTORY_COLS, r))) for r in rows]

    def count(self, user_id: str | None = None) -> int:
        uid = None if user_id is None else check_user(user_id)
        with self._read() as cur:
            if uid is None:
                return int(cur.execute("SELECT count(*) FROM memories").fetchone()[0])
            return int(cur.execute("SELECT count(*) FROM memories WHERE user_id = %s", [uid]).fetchone()[0])

    def users(self, prefix: str = "") -> dict[str, int]:
        """User ids holding memories (those starting with ``prefix``), with their memory counts."""
        if not isinstance(prefix, str):
            raise InvalidInput(f"prefix must be a string, got {type(prefix).__name__}")
        with self._read() as cur:
            rows = cur.execute('SELECT user_id, count(*) FROM memories WHERE starts_with(user_id, %s)'
                               ' GROUP BY user_id ORDER BY user_id COLLATE "C"', [prefix])
            return {r[0]: int(r[1]) for r in rows}

    def search(self, query: str, user_id: str, k: int = 5, *, mode: str = "hybrid",
               filters: Any = None) -> list[SearchHit]:
        """The user's k memories best matching ``query``, best first (modes and scores as in MemoryStore.search).

        Keyword scores are PostgreSQL's ``ts_rank`` (higher is better), not BM25.
        """
        query, user_id, k = check_text(query, "query"), check_user(user_id), check_k(k)
        mode, flt = check_mode(mode), parse_filter(filters)
        vec = self._embed([query])[0] if mode != "keyword" else None
        where, params = to_pg_sql(flt)
        with self._read(flt) as cur:
            ranked = ranked_search(mode, k,
                                   vector=lambda n: self._vector_ranked(cur, vec, user_id, n, where, params),
                                   keyword=lambda n: self._keyword_ranked(cur, query, user_id, n, where, params))
            return self._hits(cur, user_id, ranked)

    def search_vector(self, vec: Any, user_id: str, k: int = 5, *, filters: Any = None) -> list[SearchHit]:
        """Vector search with a precomputed query vector (re-normalised); ``score`` is the cosine."""
        user_id, k = check_user(user_id), check_k(k)
        q = check_vectors(vec, 1, self.dim)[0]
        flt = parse_filter(filters)
        where, params = to_pg_sql(flt)
        with self._read(flt) as cur:
            return self._hits(cur, user_id, self._vector_ranked(cur, q, user_id, k, where, params))

    def _vector_ranked(self, cur: psycopg.Cursor, q: np.ndarray, user_id: str, k: int, where: str,
                       params: list[Any]) -> list[tuple[int, float]]:
        """The k best ``(id, cosine)`` among the user's rows passing ``where``; exact unless index="hnsw"."""
        sql = f"SELECT m.id, -(m.embedding <#> %s) AS s FROM memories m WHERE m.user_id = %s AND {where}"
        if self.index_kind == "hnsw":
            # Iterative scans go on past ef_search until k rows pass the user and filter conditions.
            cur.execute("SELECT set_config('hnsw.ef_search', %s, true), set_config('hnsw.iterative_scan',"
                        " 'strict_order', true)", [str(self.ef_search)])
            rows = cur.execute(sql + " ORDER BY m.embedding <#> %s LIMIT %s",
                               [q, user_id, *params, q, min(k, _MAX_LIMIT)])
        else:  # ordered by the output column, not the indexed expression: an exact scan of the user's rows
            rows = cur.execute(sql + " ORDER BY s DESC, m.id LIMIT %s", [q, user_id, *params, min(k, _MAX_LIMIT)])
        return [(int(i), float(s)) for i, s in rows]

    def _keyword_ranked(self, cur: psycopg.Cursor, query: str, user_id: str, n: int, where: str,
                        params: list[Any]) -> list[tuple[int, float]]:
        """The user's ``n`` best full-text matches as ``(id, ts_rank)``; every term is plain text."""
        terms = query_terms(query)
        if not terms:
            return []
        tsq = " || ".join(["plainto_tsquery('memory_search', memory_fold(%s))"] * len(terms))
        rows = cur.execute(
            f"SELECT m.id, ts_rank(m.tsv, q.q) AS s FROM memories m, (SELECT {tsq} AS q) q"
            f" WHERE m.user_id = %s AND m.tsv @@ q.q AND {where} ORDER BY s DESC, m.id LIMIT %s",
            [*terms, user_id, *params, min(n, _MAX_LIMIT)])
        return [(int(i), float(s)) for i, s in rows]

    def _hits(self, cur: psycopg.Cursor, user_id: str, ranked: list[tuple[int, float]]) -> list[SearchHit]:
        """Records for ranked ids, in rank order, re-read under the user's id."""
        if not ranked:
            return []
        rows = {r[0]: r for r in cur.execute(f"SELECT {_COLS} FROM memories WHERE user_id = %s AND id = ANY(%s)",
                                             [user_id, [i for i, _ in ranked]])}
        return [_record(rows[i], SearchHit, score=float(s)) for i, s in ranked if i in rows]

    def set_ef_search(self, ef_search: int) -> None:
        """HNSW search breadth (recall vs latency); ignored by exact search."""
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or not 1 <= ef_search <= 1000:
            raise InvalidInput(f"ef_search must be an int in 1..1000, got {ef_search!r}")
        self.ef_search = ef_search

    def stats(self) -> dict[str, Any]:
        with self._read() as cur:
            n, users = cur.execute("SELECT count(*), count(DISTINCT user_id) FROM memories").fetchone()
            size = cur.execute("SELECT pg_total_relation_size('memories') + pg_total_relation_size('history')"
                               " + pg_total_relation_size('receipts')").fetchone()[0]
        return {"n": int(n), "users": int(users), "index": self.index_kind, "dim": self.dim,
                "index_entries": int(n), "db_size_bytes": int(size), "change_seq": None,
                "schema_version": pg_schema.SCHEMA_VERSION, "backend": "postgres", "url": self.url}

    def flush(self) -> None:
        """Nothing to save: every commit is already in the database."""
        if self._closed:
            raise StoreError("store is closed")

    # ---- export / import (the same JSONL as MemoryStore) ------------------------------

    def export_jsonl(self, path: Any, *, user_id: str | None = None, include_history: bool = True,
                     include_embeddings: bool = False) -> int:
        """Write one JSON object per memory; returns how many. See memory_store.transfer."""
        from memory_store.pg_transfer import export_jsonl

        return export_jsonl(self, path, user_id=user_id, include_history=include_history,
                            include_embeddings=include_embeddings)

    @classmethod
    def import_jsonl(cls, path: Any, url: str, embedder: Embedder | None = None, index: str | None = None, *,
                     dim: int | None = None) -> "PostgresStore":
        """Open/create the store at ``url`` and load an export into it (keeps ids and history)."""
        from memory_store.pg_transfer import import_jsonl

        store = cls(url, embedder=embedder, index=index, dim=dim)
        try:
            import_jsonl(store, path)
        except BaseException:
            store.close()
            raise
        return store


def _configure(conn: psycopg.Connection) -> None:
    """Each pooled connection: vectors as numpy arrays, times read as UTC (naive ISO = UTC, as in SQLite)."""
    register_vector(conn)
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()
