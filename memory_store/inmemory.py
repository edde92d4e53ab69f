"""``InMemoryStore``: the store contract in memory, with cheap copy-on-write forks.

Why: a GRPO reward applies each sampled operation list to the bank the
prompt was built from and scores what the Answer Agent would then retrieve.
With 8 samples per prompt that is 8 copies of a bank per step; a SQLite file
and a saved index per copy would cost more than the model. ``fork()`` shares
the records, vectors and history with its parent until either side writes,
and the first write copies them (a few hundred kilobytes for a LoCoMo bank).

Everything a caller sees behaves as in :class:`memory_store.MemoryStore`:
the same validation (same typed errors, raised before any change), ids that
are never reused, per-user scoping, the same exact ranking (the same flat
index class, so ties break the same way), history rows, and all-or-nothing
``apply``. Keyword search and filters run on a private in-memory SQLite
mirror (id, user, text, times, metadata) with the *same* FTS5 table,
triggers and compiled filter SQL as the durable store, so BM25 scores, hybrid
rankings and filter semantics are identical, not re-implemented. The
contract tests run against both. Nothing is persisted; ``close()`` only
forbids further use.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from memory_store.embedders import Embedder
from memory_store.errors import AlreadyApplied, EmbeddingDimensionMismatch, InvalidInput, MemoryNotFound, StoreError
from memory_store.filters import matching_ids, parse_filter, sql_errors, to_sql
from memory_store.index import VectorIndex
from memory_store.keyword import keyword_ranked, ranked_search, repair_fts
from memory_store.records import AppliedOp, HistoryEntry, MemoryRecord, SearchHit
from memory_store.plans import PlanAdd, PlanDelete, PlanStep, PlanUpdate, plan_apply
from memory_store.writes import WriteMethods, sha as _sha
from memory_store.validation import (
    check_id, check_k, check_label, check_metadata, check_mode, check_receipts, check_text, check_timestamp,
    check_user,
    check_vectors,
)

__all__ = ["InMemoryStore"]


def _mirror() -> sqlite3.Connection:
    """An empty SQLite mirror with the durable store's column names, FTS table and triggers."""
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE memories (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, text TEXT NOT NULL,"
                 " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, metadata TEXT NOT NULL)")
    repair_fts(conn)
    return conn


def _copy(conn: sqlite3.Connection) -> sqlite3.Connection:
    dst = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    conn.backup(dst)
    return dst


class InMemoryStore(WriteMethods):
    """A non-durable store with the :class:`~memory_store.MemoryBackend` contract and ``fork()``."""

    def __init__(self, embedder: Embedder | None = None, *, dim: int | None = None) -> None:
        if embedder is None and dim is None:
            raise StoreError("an in-memory store needs an embedder or dim=")
        if embedder is not None and dim is not None and int(embedder.dim) != dim:
            raise EmbeddingDimensionMismatch(f"embedder dim {embedder.dim} != dim={dim}")
        self.embedder = embedder
        self.dim = int(embedder.dim) if embedder is not None else int(dim)
        self._records: dict[int, MemoryRecord] = {}
        self._index = VectorIndex(self.dim, "flat")
        self._history: list[HistoryEntry] = []
        self._receipts: set[tuple[str, str]] = set()  # (user_id, key)
        self._sql = _mirror()
        self._last_id = 0
        self._shared = False  # True while a fork may still read our containers
        self._closed = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"InMemoryStore(n={len(self._records)}, dim={self.dim})"

    def __enter__(self) -> "InMemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    # ---- copy-on-write --------------------------------------------------------------

    def fork(self) -> "InMemoryStore":
        """A copy that shares this store's data until one of the two writes."""
        with self._lock:
            self._check_open()
            child = InMemoryStore.__new__(InMemoryStore)
            child.embedder, child.dim = self.embedder, self.dim
            child._records, child._index, child._history = self._records, self._index, self._history
            child._receipts = self._receipts
            child._sql = self._sql
            child._last_id, child._closed, child._lock = self._last_id, False, threading.RLock()
            child._shared = self._shared = True
            return child

    def _own(self) -> None:
        """Take private copies before the first write after a fork."""
        if self._shared:
            self._records = dict(self._records)
            self._index = self._index.copy()
            self._history = list(self._history)
            self._receipts = set(self._receipts)
            self._sql = _copy(self._sql)
            self._shared = False

    # ---- writes ---------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.embedder is None:
            raise StoreError("this store was opened without an embedder: pass embeddings/vectors instead")
        return check_vectors(self.embedder.embed(texts), len(texts), self.dim)

    def update(self, memory_id: int, text: str, user_id: str, *, timestamp: str | None = None,
               actor: str = "user", source: str | None = None) -> MemoryRecord:
        """Replace a memory's text (re-embedded); returns the updated record."""
        mid, user_id, text = check_id(memory_id), check_user(user_id), check_text(text)
        ts = check_timestamp(timestamp)
        actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
        self._commit(user_id, [PlanUpdate(mid, text, self._embed([text])[0])], actor, source, ts)
        return self._records[mid]

    def delete(self, memory_id: int, user_id: str, *, actor: str = "user",
               source: str | None = None) -> MemoryRecord:
        """Delete a memory; returns the record as it was."""
        mid, user_id = check_id(memory_id), check_user(user_id)
        actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
        with self._lock:
            before = self._get(mid, user_id)
            self._commit(user_id, [PlanDelete(mid)], actor, source, check_timestamp(None))
        return before

    def apply(self, ops: Sequence[Any], user_id: str, *, actor: str = "agent", source: str | None = None,
              timestamp: str | None = None, receipts: Sequence[str] = ()) -> list[AppliedOp]:
        """Apply a batch of Add/Update/Delete/Noop at once: all land or none (as ``MemoryStore.apply``,
        receipts included)."""
        receipts = check_receipts(receipts)
        planned = plan_apply(ops, user_id, actor=actor, source=source, timestamp=timestamp, embed=self._embed)
        with self._lock:
            held = sorted(k for k in receipts if (planned[0], k) in self._receipts)
            if held:
                raise AlreadyApplied(held, planned[0])
            applied = self._commit(*planned)[0]
            self._own()
            self._receipts.update((planned[0], k) for k in receipts)
        return applied

    def receipts(self, user_id: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` this user already holds (see :meth:`MemoryStore.apply`)."""
        user_id, keys = check_user(user_id), check_receipts(keys)
        with self._lock:
            return {k for k in keys if (user_id, k) in self._receipts}

    def _commit(self, user_id: str, plan: list[PlanStep], actor: str, source: str | None,
                ts: str) -> tuple[list[AppliedOp], dict[int, tuple]]:
        """Check every id, build the batch's changes aside, write the mirror, then publish them.

        Nothing of ``self`` changes before the mirror write succeeded, so a failure
        anywhere leaves the store as it was (all or nothing, as ``MemoryStore``).
        """
        with self._lock:
            self._check_open()
            for p in plan:
                if isinstance(p, (PlanUpdate, PlanDelete)):
                    self._get(p.id, user_id)  # must exist before the batch, for this user
            changed: dict[int, MemoryRecord | None] = {}  # id -> new record, None = deleted
            events: list[tuple] = []
            applied: list[AppliedOp] = []
            upserts: dict[int, np.ndarray] = {}
            last_id = self._last_id
            for p in plan:
                if isinstance(p, PlanAdd):
                    text, meta, vec, created = p
                    last_id += 1
                    changed[last_id] = MemoryRecord.model_construct(
                        id=last_id, user_id=user_id, text=text, created_at=created, updated_at=created,
                        metadata=json.loads(meta), hash=_sha(text))
                    events.append((last_id, "ADD", None, text, created))
                    upserts[last_id] = vec
                    applied.append(AppliedOp.model_construct(op="ADD", id=last_id, old_text=None, new_text=text))
                elif isinstance(p, PlanUpdate):
                    mid, text, vec = p
                    old = changed[mid] if mid in changed else self._records[mid]
                    changed[mid] = old.model_copy(update={"text": text, "hash": _sha(text), "updated_at": ts})
                    events.append((mid, "UPDATE", old.text, text, ts))
                    upserts[mid] = vec
                    applied.append(AppliedOp.model_construct(op="UPDATE", id=mid, old_text=old.text, new_text=text))
                elif isinstance(p, PlanDelete):
                    mid = p.id
                    old = changed[mid] if mid in changed else self._records[mid]
                    changed[mid] = None
                    events.append((mid, "DELETE", old.text, None, ts))
                    upserts.pop(mid, None)
                    applied.append(AppliedOp.model_construct(op="DELETE", id=mid, old_text=old.text, new_text=None))
                else:
                    applied.append(AppliedOp.model_construct(op="NOOP", id=None, old_text=None, new_text=None))
            self._own()
            self._mirror_rows(changed)
            for mid, rec in changed.items():  # published only now: the mirror write succeeded
                if rec is None:
                    self._records.pop(mid, None)
                else:
                    self._records[mid] = rec
            for mid, event, old_text, new_text, at in events:
                self._event(mid, user_id, event, old_text, new_text, actor, source, at)
            self._last_id = last_id
            if upserts:
                ids = np.fromiter(upserts, dtype=np.int64, count=len(upserts))
                self._index.add(user_id, ids, np.stack(list(upserts.values())))
            removed = {mid for mid, rec in changed.items() if rec is None}
            if removed:
                self._index.remove(removed)
            return applied, {}  # (the durable stores return the rows before; nothing here needs them)

    def _mirror_rows(self, changed: dict[int, MemoryRecord | None]) -> None:
        """Bring the SQLite mirror (and through its triggers the FTS table) in step with ``changed``."""
        conn = self._sql
        conn.execute("BEGIN")
        try:
            conn.executemany("DELETE FROM memories WHERE id = ?", [(i,) for i in changed])
            conn.executemany(
                "INSERT INTO memories (id, user_id, text, created_at, updated_at, metadata) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.id, r.user_id, r.text, r.created_at, r.updated_at, check_metadata(r.metadata))
                 for r in changed.values() if r is not None])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _event(self, mid: int, user_id: str, event: str, old: str | None, new: str | None, actor: str,
               source: str | None, at: str) -> None:
        self._history.append(HistoryEntry.model_construct(
            id=len(self._history) + 1, memory_id=mid, user_id=user_id, event=event, old_text=old, new_text=new,
            actor=actor, source=source, at=at))

    # ---- reads ----------------------------------------------------------------------

    def _get(self, mid: int, user_id: str) -> MemoryRecord:
        rec = self._records.get(mid)
        if rec is None or rec.user_id != user_id:
            raise MemoryNotFound(mid, user_id)
        return rec

    def get(self, memory_id: int, user_id: str) -> MemoryRecord:
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._lock:
            self._check_open()
            return self._get(mid, user_id)

    def list(self, user_id: str) -> list[MemoryRecord]:
        """All of the user's memories, oldest first (created_at, then id)."""
        user_id = check_user(user_id)
        with self._lock:
            self._check_open()
            rows = [r for r in self._records.values() if r.user_id == user_id]
        return sorted(rows, key=lambda r: (r.created_at, r.id))

    def history(self, memory_id: int, user_id: str) -> list[HistoryEntry]:
        """Events of one memory (also after its deletion), oldest first."""
        mid, user_id = check_id(memory_id), check_user(user_id)
        with self._lock:
            self._check_open()
            rows = [h for h in self._history if h.memory_id == mid and h.user_id == user_id]
        if not rows:
            raise MemoryNotFound(mid, user_id)
        return rows

    def users(self, prefix: str = "") -> dict[str, int]:
        """User ids holding memories (those starting with ``prefix``), with their memory counts."""
        if not isinstance(prefix, str):
            raise InvalidInput(f"prefix must be a string, got {type(prefix).__name__}")
        with self._lock:
            self._check_open()
            counts = Counter(r.user_id for r in self._records.values() if r.user_id.startswith(prefix))
            return dict(sorted(counts.items()))

    def count(self, user_id: str | None = None) -> int:
        with self._lock:
            self._check_open()
            if user_id is None:
                return len(self._records)
            user_id = check_user(user_id)
            return sum(r.user_id == user_id for r in self._records.values())

    def search(self, query: str, user_id: str, k: int = 5, *, mode: str = "hybrid",
               filters: Any = None) -> list[SearchHit]:
        """The user's k memories best matching ``query`` (as :meth:`memory_store.MemoryStore.search`)."""
        query, user_id, k = check_text(query, "query"), check_user(user_id), check_k(k)
        mode, flt = check_mode(mode), parse_filter(filters)
        vec = self._embed([query])[0] if mode != "keyword" else None
        where, params = to_sql(flt)  # compiled once for both lists
        with self._lock, sql_errors(flt):
            self._check_open()
            ranked = ranked_search(
                mode, k,
                vector=lambda n: self._vector_ranked(vec, user_id, n, where if flt else None, params),
                keyword=lambda n: keyword_ranked(self._sql, query, user_id, n, where, params))
            return self._hits(ranked)

    def search_vector(self, vec: Any, user_id: str, k: int = 5, *, filters: Any = None) -> list[SearchHit]:
        """Vector search with a precomputed query vector (re-normalised); ``score`` is the cosine."""
        user_id, k = check_user(user_id), check_k(k)
        q = check_vectors(vec, 1, self.dim)[0]
        flt = parse_filter(filters)
        where, params = to_sql(flt)
        with self._lock, sql_errors(flt):
            self._check_open()
            return self._hits(self._vector_ranked(q, user_id, k, where if flt else None, params))

    def _vector_ranked(self, q: np.ndarray, user_id: str, k: int, where: str | None,
                       params: list[Any]) -> list[tuple[int, float]]:
        if where is None:
            ids, scores = self._index.search(user_id, q, k)
        else:
            subset = matching_ids(self._sql, user_id, where, params)
            ids, scores = self._index.search_subset(user_id, q, k, subset)
        return list(zip(ids.tolist(), scores.tolist()))

    def _hits(self, ranked: list[tuple[int, float]]) -> list[SearchHit]:
        records = self._records
        return [SearchHit.model_construct(**records[i].__dict__, score=float(s)) for i, s in ranked if i in records]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            self._check_open()
            return {"n": len(self._records), "users": len({r.user_id for r in self._records.values()}),
                    "index": "flat", "dim": self.dim, "index_entries": len(self._index), "persistent": False}
