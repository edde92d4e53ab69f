"""The storage contract the agents are written against.

The Memory Manager and the Answer Agent need four things from a store:
ranked search (by text in the modes of :data:`memory_store.keyword.SEARCH_MODES`,
or by a precomputed vector), with filters (:mod:`memory_store.filters`)
enforced by the store, the user's memories in
order, one atomic batch of operations (with receipts that make a retried
write exactly-once), and which receipts a user already holds. :class:`MemoryBackend` names
exactly those, plus the embedder the manager batches its queries with.
:class:`~memory_store.MemoryStore` (SQLite + FAISS, durable) and
:class:`~memory_store.InMemoryStore` (copy-on-write, for training rewards
and evaluation scratch work) both implement it, so the product, the GRPO
rewards and the evaluation harness run the same agent code on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from memory_store.embedders import Embedder
from memory_store.records import AppliedOp, MemoryRecord, SearchHit

__all__ = ["MemoryBackend"]


@runtime_checkable
class MemoryBackend(Protocol):
    """What the agents call on a store (see the module docstring)."""

    embedder: Embedder | None

    def search(self, query: str, user_id: str, k: int = 5, *, mode: str = "hybrid",
               filters: Any = None) -> list[SearchHit]: ...

    def search_vector(self, vec: Any, user_id: str, k: int = 5, *, filters: Any = None) -> list[SearchHit]: ...

    def list(self, user_id: str) -> list[MemoryRecord]: ...

    def apply(self, ops: Sequence[Any], user_id: str, *, actor: str = "agent", source: str | None = None,
              timestamp: str | None = None, receipts: Sequence[str] = ()) -> list[AppliedOp]: ...

    def receipts(self, user_id: str, keys: Sequence[str]) -> set[str]: ...
