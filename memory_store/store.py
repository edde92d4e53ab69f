"""``MemoryStore``: per-user memories in SQLite with a derived FAISS index.

Order of truth: every change is committed to SQLite first (one transaction
per call/batch, with history and a ``changes`` log row per memory touched);
the in-memory index is updated only after the commit. The index is saved at
``close()``/``flush()`` with the change counter it reflects; on open a
missing/corrupt/foreign index is rebuilt from SQLite and a stale one catches
up by replaying the ``changes`` log. The same catch-up runs (cheaply: one
``max(seq)`` read) before every search and write, so several processes can
share one store folder: SQLite serialises their writes and each process's
index follows the others' commits.

A crash therefore never loses a committed memory (SQLite has it) and never
leaves an index entry for an uncommitted one (the index is only ever built
from committed rows).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import groupby, islice
from pathlib import Path
from typing import Any

import numpy as np
from memory_store import schema
from memory_store.embedders import Embedder
from memory_store.errors import AlreadyApplied, EmbeddingDimensionMismatch, InvalidInput, MemoryNotFound, StoreError
from memory_store.filters import matching_ids, parse_filter, sql_errors, to_sql
from memory_store.index import HNSW_EF_SEARCH, INDEX_KINDS, IndexLoadError, VectorIndex
from memory_store.records import (
    AppliedOp, HistoryEntry, MemoryRecord, SearchHit,
)
from memory_store.keyword import fts_problem, keyword_ranked, ranked_search, repair_fts
from memory_store.plans import PlanAdd, PlanDelete, PlanStep, PlanUpdate
from memory_store.private import private_file, private_folder
from memory_store.writes import WriteMethods, applied as _applied, record as _record, sha as _sha
from memory_store.validation import (
    check_id, check_k, check_mode, check_receipts, check_text, check_user, check_vectors,
)

__all__ = ["MemoryStore", "INDEX_FILE"]

log = logging.getLogger(__name__)

INDEX_FILE = "index.bin"
_COLS = "id, user_id, text, created_at, updated_at, metadata, hash"
_CHUNK = 900  # stay under SQLite's bound-parameter limit
STALE_TMP_S = 600  # an index temp file this old is not being written any more
REPLAY_LIMIT = 0.5  # replay the changes log unless it touches more than this share of rows


def _chunks(seq: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class MemoryStore(WriteMethods):
    """FAISS + SQLite memory store; see docs/store.md and docs/architecture.md."""

    def __init__(self, path: str | Path, embedder: Embedder | None = None, index: str | None = None, *,
                 dim: int | None = None, ef_search: int = HNSW_EF_SEARCH) -> None:
        # index=None: the kind this folder was last opened with (else "flat"), so a
        # quick MemoryStore(folder) for a count never swaps an HNSW index for a flat one.
        if index is not None and index not in INDEX_KINDS:
            raise InvalidInput(f"index must be one of {INDEX_KINDS}, got {index!r}")
        if embedder is not None and dim is not None and int(embedder.dim) != dim:
            raise EmbeddingDimensionMismatch(f"embedder dim {embedder.dim} != dim={dim}")
        self.path = Path(path)
        if "\x00" in str(self.path):  # os calls would raise a raw ValueError
            raise InvalidInput(f"store path contains a NUL byte: {str(self.path)!r}")
        if embedder is None and dim is None and not (self.path / schema.DB_NAME).exists():
            # Checked before creating anything: a new store must know its vector width.
            raise StoreError(f"no store at {self.path}: creating one needs an embedder or dim=")
        try:
            private_folder(self.path, schema.DB_NAME)  # 0700, or tightened if an older version left it open to others
            private_file(self.path / schema.DB_NAME)  # 0600 from the start; -wal/-shm inherit its mode
        except OSError as exc:  # read-only or full folder, not ours...: typed, the cause kept
            raise StoreError(f"cannot create or open the store folder {self.path}: {exc}") from exc
        self.embedder = embedder
        self.index_kind = index or "flat"
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1:
            raise InvalidInput(f"ef_search must be an int >= 1, got {ef_search!r}")
        self.ef_search = ef_search
        self._lock = threading.RLock()
        self._closed = False
        self._db = schema.connect(self.path)
        try:
            want = int(embedder.dim) if embedder is not None else dim
            self.dim = schema.migrate(self._db, want)
            if want is not None and want != self.dim:
                raise EmbeddingDimensionMismatch(f"store {self.path} has dim {self.dim}, embedder/dim gives {want}")
            self._uuid = schema.get_meta(self._db, "db_uuid") or ""
            recorded_kind = schema.get_meta(self._db, "index_kind")
            if index is None and recorded_kind in INDEX_KINDS:
                self.index_kind = recorded_kind
            elif recorded_kind != self.index_kind:
                with schema.write_txn(self._db):
                    schema.set_meta(self._db, "index_kind", self.index_kind)
            self._repair_keyword_index()
            self._index = self._open_index()
        except BaseException:
            self._db.conn.close()
            raise

    # ---- plumbing -------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"MemoryStore({str(self.path)!r}, index={self.index_kind!r}, dim={self.dim})"

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Lock + one read snapshot (its connection), with the index caught up to that snapshot."""
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._db.conn
            conn.execute("BEGIN")
            try:
                self._catch_up()
                yield conn
            finally:
                conn.execute("COMMIT")

    def _repair_keyword_index(self) -> None:
        """Rebuild a missing or out-of-step FTS index from the truth (checked without the write lock first)."""
        if fts_problem(self._db.conn) is None:
            return
        with schema.write_txn(self._db):
            problem = fts_problem(self._db.conn)  # re-checked under the lock: another opener may have fixed it
            if problem is not None:
                log.warning("store %s: %s; rebuilding it from SQLite", self.path, problem)
                repair_fts(self._db.conn)

    def _open_index(self) -> VectorIndex:
        file = self.path / INDEX_FILE
        for tmp in self.path.glob(INDEX_FILE + ".*.tmp"):  # left by a process killed mid-save
            try:
                if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink()
            except OSError:  # raced with its writer or another cleaner: not ours to fix
                pass
        idx: VectorIndex | None = None
        if file.exists():
            try:
                idx = VectorIndex.load(file, dim=self.dim, kind=self.index_kind, db_uuid=self._uuid,
                                       ef_search=self.ef_search)
            except IndexLoadError as exc:
                log.warning("index %s unusable (%s): rebuilding from SQLite", file, exc)
        self._index = idx if idx is not None else VectorIndex(self.dim, self.index_kind, self.ef_search)
        # What the file holds (-1: nothing usable), not the caught-up state: a replayed or
        # rebuilt index is saved at close, so the next open does not redo the recovery.
        self._saved_seq = idx.seq if idx is not None else -1
        if idx is None:
            self._index.seq = -1  # forces a full rebuild in _catch_up
        self._db.conn.execute("BEGIN")
        try:
            self._catch_up()
        finally:
            self._db.conn.execute("COMMIT")
        return self._index

    def _rebuild(self, seq: int) -> None:
        """Full rebuild of the index from SQLite (caller holds a snapshot)."""
        idx = VectorIndex(self.dim, self.index_kind, self.ef_search)
        cur = self._db.conn.execute("SELECT user_id, id, embedding FROM memories ORDER BY user_id, id")
        for user, rows in groupby(cur, key=lambda r: r[0]):
            while batch := list(islice(rows, 50_000)):  # bounded memory for big stores
                ids = np.fromiter((r[1] for r in batch), dtype=np.int64, count=len(batch))
                vecs = np.frombuffer(b"".join(r[2] for r in batch), dtype=np.float32).reshape(len(batch), self.dim)
                idx.add(user, ids, vecs)
        idx.seq = seq
        self._index = idx

    def _catch_up(self) -> None:
        """Fold other processes' commits into the index (caller holds a snapshot)."""
        idx = self._index
        seq = schema.current_seq(self._db)
        if seq == idx.seq:
            return
        if seq < idx.seq or idx.seq < 0:
            self._rebuild(seq)
            return
        changed = [r[0] for r in self._db.conn.execute(
            "SELECT DISTINCT memory_id FROM changes WHERE seq > ? AND seq <= ?", [idx.seq, seq])]
        # Flat: re-adding most rows costs about a rebuild, so rebuild. HNSW: a graph
        # rebuild is far dearer than inserting the changed rows, so always replay.
        if self.index_kind == "flat" and len(changed) > max(1000, REPLAY_LIMIT * len(idx)):
            self._rebuild(seq)
            return
        present: set[int] = set()
        for part in _chunks(changed):
            marks = ",".join("?" * len(part))
            rows = self._db.conn.execute(
                f"SELECT user_id, id, embedding FROM memories WHERE id IN ({marks}) ORDER BY user_id, id", list(part))
            for user, group in groupby(rows, key=lambda r: r[0]):
                batch = list(group)
                ids = np.array([r[1] for r in batch], dtype=np.int64)
                vecs = np.frombuffer(b"".join(r[2] for r in batch), dtype=np.float32).reshape(len(batch), self.dim)
                idx.add(user, ids, vecs)  # upsert: covers adds and updates
                present.update(ids.tolist())
        idx.remove(i for i in changed if i not in present)
        idx.seq = seq

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise StoreError("this store was opened without an embedder: pass embeddings/vectors instead")
        vecs = self.embedder.embed(texts)
        return check_vectors(vecs, len(texts), self.dim)

    # ---- the one write path -----------------------------------------------------------

    def _commit(self, user_id: str, plan: list[PlanStep], actor: str, source: str | None,
                ts: str, receipts: Sequence[str] = ()) -> tuple[list[AppliedOp], dict[int, tuple]]:
        """Apply a validated plan in one transaction, then mirror it in the index.

        ``plan``: typed steps (``memory_store.plans``). Ids are checked against ``user_id`` under the
        write lock, so a raise here rolls back everything. ``receipts`` are recorded
        in the same transaction; one already held raises ``AlreadyApplied``. Returns
        the applied ops and the rows of updated/deleted ids as they were before the batch.
        """
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._db.conn
            upserts: dict[int, np.ndarray] = {}
            removed: set[int] = set()
            applied: list[AppliedOp] = []
            with schema.write_txn(self._db):
                self._catch_up()
                self._record_receipts(user_id, receipts, ts)
                wanted = sorted({p.id for p in plan if isinstance(p, (PlanUpdate, PlanDelete))})
                before: dict[int, tuple] = {}
                for part in _chunks(wanted):
                    marks = ",".join("?" * len(part))
                    for r in conn.execute(f"SELECT {_COLS} FROM memories WHERE user_id = ? AND id IN ({marks})",
                                          [user_id, *part]):
                        before[r[0]] = tuple(r)
                current = {mid: r[2] for mid, r in before.items()}
                for mid in wanted:
                    if mid not in current:
                        raise MemoryNotFound(mid, user_id)
                row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'memories'").fetchone()
                next_id = int(row[0]) if row else 0
                inserts, updates, deletes, history = [], [], [], []
                for p in plan:
                    if isinstance(p, PlanAdd):
                        text, meta, vec, created = p
                        next_id += 1
                        inserts.append((next_id, user_id, text, created, created, meta, _sha(text), vec.tobytes()))
                        history.append((next_id, user_id, "ADD", None, text, actor, source, created))
                        upserts[next_id] = vec
                        applied.append(_applied("ADD", next_id, None, text))
                    elif isinstance(p, PlanUpdate):
                        mid, text, vec = p
                        old = current[mid]
                        updates.append((text, _sha(text), vec.tobytes(), ts, mid, user_id))
                        history.append((mid, user_id, "UPDATE", old, text, actor, source, ts))
                        current[mid] = text
                        upserts[mid] = vec
                        applied.append(_applied("UPDATE", mid, old, text))
                    elif isinstance(p, PlanDelete):
                        mid = p.id
                        deletes.append((mid, user_id))
                        history.append((mid, user_id, "DELETE", current[mid], None, actor, source, ts))
                        upserts.pop(mid, None)
                        removed.add(mid)
                        applied.append(_applied("DELETE", mid, current[mid], None))
                    else:
                        applied.append(_applied("NOOP", None, None, None))
                conn.executemany("INSERT INTO memories (id, user_id, text, created_at, updated_at, metadata, hash,"
                                 " embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", inserts)
                conn.executemany("UPDATE memories SET text = ?, hash = ?, embedding = ?, updated_at = ?"
                                 " WHERE id = ? AND user_id = ?", updates)
                conn.executemany("DELETE FROM memories WHERE id = ? AND user_id = ?", deletes)
                conn.executemany("INSERT INTO history (memory_id, user_id, event, old_text, new_text, actor, source,"
                                 " at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", history)
                touched = [*upserts, *removed]
                conn.executemany("INSERT INTO changes (memory_id) VALUES (?)", [(i,) for i in touched])
                new_seq = schema.current_seq(self._db)
            # Committed. Mirror in the index (a failure there forces a rebuild next time).
            self._mirror(new_seq, {mid: (user_id, vec) for mid, vec in upserts.items()}, removed)
            return applied, before

    def _record_receipts(self, user_id: str, receipts: Sequence[str], ts: str) -> None:
        if not receipts:
            return
        held = self._held_receipts(user_id, receipts)
        if held:
            raise AlreadyApplied(sorted(held), user_id)
        self._db.conn.executemany("INSERT INTO receipts (user_id, key, at) VALUES (?, ?, ?)",
                                  [(user_id, k, ts) for k in receipts])

    def _held_receipts(self, user_id: str, keys: Sequence[str]) -> set[str]:
        held: set[str] = set()
        for part in _chunks(list(keys)):
            marks = ",".join("?" * len(part))
            held.update(r[0] for r in self._db.conn.execute(
                f"SELECT key FROM receipts WHERE user_id = ? AND key IN ({marks})", [user_id, *part]))
        return held

    # ---- writes --------------------------------------------------------------------

    def _restore(self, rows: list[tuple], vecs: np.ndarray, history: list[tuple], all_ids: list[int]) -> None:
        """Write an import (``transfer.prepare_import``'s rows) in one transaction, ids kept.

        Refuses (``InvalidInput``) an id the store already holds, live or in history;
        moves the id sequence past every imported id, deleted ones included.
        """
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._db.conn
            with schema.write_txn(self._db):
                self._catch_up()
                for part in _chunks(all_ids):
                    marks = ",".join("?" * len(part))
                    hit = conn.execute(f"SELECT id FROM memories WHERE id IN ({marks}) UNION ALL "
                                       f"SELECT memory_id FROM history WHERE memory_id IN ({marks}) LIMIT 1",
                                       [*part, *part]).fetchone()
                    if hit is not None:
                        raise InvalidInput(f"id {hit[0]} already exists in {self.path}; import into an empty store")
                conn.executemany("INSERT INTO memories (id, user_id, text, created_at, updated_at, metadata, hash,"
                                 " embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(*r, vec.tobytes()) for r, vec in zip(rows, vecs)])
                conn.executemany("INSERT INTO history (memory_id, user_id, event, old_text, new_text, actor, source,"
                                 " at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", history)
                conn.executemany("INSERT INTO changes (memory_id) VALUES (?)", [(r[0],) for r in rows])
                # AUTOINCREMENT only tracks ids inserted into memories; deleted ids must not come back.
                top = max(all_ids)
                if conn.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'memories'").fetchone() is None:
                    conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('memories', ?)", [top])
                else:
                    conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'memories'", [top])
                new_seq = schema.current_seq(self._db)
            self._mirror(new_seq, {r[0]: (r[1], vecs[j]) for j, r in enumerate(rows)}, set())

    def _mirror(self, new_seq: int, upserts: dict[int, tuple[str, np.ndarray]], removed: set[int]) -> None:
        """Bring the index in step with a committed transaction; if that fails, force a rebuild next time."""
        try:
            for user, group in groupby(sorted(upserts.items(), key=lambda kv: kv[1][0]), key=lambda kv: kv[1][0]):
                items = list(group)
                self._index.add(user, np.array([mid for mid, _ in items], dtype=np.int64),
                                np.stack([vec for _, (_, vec) in items]))
            if removed:
                self._index.remove(removed)
            self._index.seq = new_seq
        except BaseException:
            self._index.seq = -1
            raise

    def receipts(self, user_id: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` this user's store already holds (see :meth:`apply`)."""
        user_id, keys = check_user(user_id), check_receipts(keys)
        with self._reading():
            return self._held_receipts(user_id, keys)

    # ---- reads ---------------------------------------------------------------------

    def get(self, memory_id: int, user_id: str) -> MemoryRecord:
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            row = self._db.conn.execute(f"SELECT {_COLS} FROM memories WHERE id = ? AND user_id = ?",
                                        [mid, user_id]).fetchone()
        if row is None:
            raise MemoryNotFound(mid, user_id)
        return _record(row)

    def list(self, user_id: str) -> list[MemoryRecord]:
        """All of the user's memories, oldest first (created_at, then id)."""
        user_id = check_user(user_id)
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            rows = self._db.conn.execute(
                f"SELECT {_COLS} FROM memories WHERE user_id = ? ORDER BY created_at, id", [user_id]).fetchall()
        return [_record(r) for r in rows]

    def history(self, memory_id: int, user_id: str) -> list[HistoryEntry]:
        """Events of one memory (also after its deletion), oldest first."""
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            rows = self._db.conn.execute(
                "SELECT id, memory_id, user_id, event, old_text, new_text, actor, source, at FROM history"
                " WHERE memory_id = ? AND user_id = ? ORDER BY id", [mid, user_id]).fetchall()
        if not rows:
            raise MemoryNotFound(mid, user_id)
        keys = ("id", "memory_id", "user_id", "event", "old_text", "new_text", "actor", "source", "at")
        return [HistoryEntry.model_construct(**dict(zip(keys, r))) for r in rows]

    def count(self, user_id: str | None = None) -> int:
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            if user_id is None:
                return int(self._db.conn.execute("SELECT count(*) FROM memories").fetchone()[0])
            return int(self._db.conn.execute("SELECT count(*) FROM memories WHERE user_id = ?",
                                             [check_user(user_id)]).fetchone()[0])

    def search(self, query: str, user_id: str, k: int = 5, *, mode: str = "hybrid",
               filters: Any = None) -> list[SearchHit]:
        """The user's k memories best matching ``query``, best first.

        ``mode``: ``"hybrid"`` (default: vector and keyword lists fused by
        reciprocal rank; ``score`` is the RRF score), ``"vector"`` (cosine) or
        ``"keyword"`` (BM25, higher is better). ``filters``: see
        :mod:`memory_store.filters`; enforced here, in every mode.
        """
        query, user_id, k = check_text(query, "query"), check_user(user_id), check_k(k)
        mode, flt = check_mode(mode), parse_filter(filters)
        vec = self._embed([query])[0] if mode != "keyword" else None
        where, params = to_sql(flt)  # compiled once for both lists
        with self._reading(), sql_errors(flt):
            conn = self._db.conn
            ranked = ranked_search(
                mode, k,
                vector=lambda n: self._vector_ranked(vec, user_id, n, where if flt else None, params),
                keyword=lambda n: keyword_ranked(conn, query, user_id, n, where, params))
            return self._hits(user_id, ranked)

    def search_vector(self, vec: Any, user_id: str, k: int = 5, *, filters: Any = None) -> list[SearchHit]:
        """Vector search with a precomputed query vector (re-normalised); ``score`` is the cosine."""
        user_id, k = check_user(user_id), check_k(k)
        q = check_vectors(vec, 1, self.dim)[0]
        flt = parse_filter(filters)
        where, params = to_sql(flt)
        with self._reading(), sql_errors(flt):
            return self._hits(user_id, self._vector_ranked(q, user_id, k, where if flt else None, params))

    def _vector_ranked(self, q: np.ndarray, user_id: str, k: int, where: str | None,
                       params: list[Any]) -> list[tuple[int, float]]:
        """The index's k best ``(id, cosine)`` among the user's rows passing the compiled filter
        ``where`` (None: no filter); the caller holds a snapshot."""
        if where is None:
            ids, scores = self._index.search(user_id, q, k)
        else:
            subset = matching_ids(self._db.conn, user_id, where, params)
            ids, scores = self._index.search_subset(user_id, q, k, subset)
        return list(zip(ids.tolist(), scores.tolist()))

    def _hits(self, user_id: str, ranked: list[tuple[int, float]]) -> list[SearchHit]:
        """Records for ranked ids, in rank order, re-read from SQLite under the user's id."""
        rows: dict[int, Any] = {}
        for part in _chunks([i for i, _ in ranked]):
            marks = ",".join("?" * len(part))
            for r in self._db.conn.execute(f"SELECT {_COLS} FROM memories WHERE user_id = ? AND id IN ({marks})",
                                           [user_id, *part]):
                rows[r[0]] = r
        return [_record(rows[i], SearchHit, score=float(s)) for i, s in ranked if i in rows]

    def set_ef_search(self, ef_search: int) -> None:
        """HNSW search breadth (recall vs latency); ignored by the flat index."""
        if isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1:
            raise InvalidInput(f"ef_search must be an int >= 1, got {ef_search!r}")
        ef = ef_search
        with self._lock:
            self.ef_search = ef
            self._index.set_ef_search(ef)

    def users(self, prefix: str = "") -> dict[str, int]:
        """User ids holding memories (those starting with ``prefix``), with their memory counts."""
        if not isinstance(prefix, str):
            raise InvalidInput(f"prefix must be a string, got {type(prefix).__name__}")
        with self._reading():
            rows = self._db.conn.execute(
                "SELECT user_id, count(*) FROM memories WHERE substr(user_id, 1, length(?)) = ?"
                " GROUP BY user_id ORDER BY user_id", [prefix, prefix])
            return {r[0]: int(r[1]) for r in rows}

    def stats(self) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._db.conn
            n = int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])
            users = int(conn.execute("SELECT count(DISTINCT user_id) FROM memories").fetchone()[0])
            db_bytes = sum(f.stat().st_size for f in self.path.glob(schema.DB_NAME + "*") if f.is_file())
            return {"n": n, "users": users, "index": self.index_kind, "dim": self.dim,
                    "index_entries": len(self._index), "db_size_bytes": db_bytes,
                    "change_seq": self._index.seq, "schema_version": schema.SCHEMA_VERSION}

    # ---- persistence --------------------------------------------------------------

    def flush(self) -> None:
        """Save the index file now (otherwise it is saved at close)."""
        with self._reading():
            pass
        with self._lock:
            file = self.path / INDEX_FILE
            if self._index.seq == self._saved_seq and file.exists():
                return
            on_disk = VectorIndex.peek(file)
            if self._saved_seq >= 0 and on_disk and on_disk.get("db_uuid") == self._uuid \
                    and on_disk.get("kind") == self.index_kind and int(on_disk.get("seq", -1)) >= self._index.seq:
                return  # another process already saved a state at least as new
            try:
                self._index.save(file, self._uuid)
            except OSError as exc:  # the index is derived: failing to cache it loses nothing
                log.warning("could not save index %s: %s", file, exc)
                return
            self._saved_seq = self._index.seq

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                self._db.conn.close()

    def export_jsonl(self, path: str | Path, *, user_id: str | None = None, include_history: bool = True,
                     include_embeddings: bool = False) -> int:
        """Write one JSON object per memory; returns how many. See memory_store.transfer."""
        from memory_store.transfer import export_jsonl

        return export_jsonl(self, path, user_id=user_id, include_history=include_history,
                            include_embeddings=include_embeddings)

    @classmethod
    def import_jsonl(cls, path: str | Path, store_path: str | Path, embedder: Embedder | None = None,
                     index: str | None = None, *, dim: int | None = None) -> "MemoryStore":
        """Open/create the store at ``store_path`` and load an export into it (keeps ids)."""
        from memory_store.transfer import import_jsonl

        store = cls(store_path, embedder=embedder, index=index, dim=dim)
        try:
            import_jsonl(store, path)
        except BaseException:
            store.close()
            raise
        return store
