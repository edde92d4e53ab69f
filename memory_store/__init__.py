"""memory_store: long-term memories in SQLite (truth) with a derived FAISS index.

``MemoryStore`` is the durable store; ``InMemoryStore`` implements the same
contract (:class:`MemoryBackend`) in memory with copy-on-write forks, for
training rewards and scratch work; ``PostgresStore`` (the ``postgres``
extra, imported on first use) puts the same store in PostgreSQL + pgvector for
many processes and hosts. :func:`open_store` picks one from a folder or URL.

Imports no other package of this project and never imports torch (the
sentence-transformers embedder loads it lazily when constructed).
"""

from __future__ import annotations

from memory_store.embedders import CachingEmbedder, Embedder, HashingEmbedder, SentenceTransformerEmbedder
from memory_store.errors import (
    AlreadyApplied, EmbeddingDimensionMismatch, InvalidInput, MemoryAgentError, MemoryNotFound, SchemaTooNew,
    StoreError,
)
from memory_store.records import (
    Add, AppliedOp, Delete, HistoryEntry, MemoryRecord, Noop, SearchHit, StoreOp, Update,
)
from memory_store.filters import And, Eq, Filter, In, InvalidFilter, Not, Or, Range, parse_filter
from memory_store.inmemory import InMemoryStore
from memory_store.keyword import SEARCH_MODES, rrf
from memory_store.protocol import MemoryBackend
from memory_store.store import MemoryStore
from memory_store.opening import is_postgres_url, open_store

__all__ = [
    "MemoryStore",
    "open_store",
    "is_postgres_url",
    "InMemoryStore",
    "MemoryBackend",
    "Embedder",
    "CachingEmbedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "Add",
    "Update",
    "Delete",
    "Noop",
    "StoreOp",
    "AppliedOp",
    "MemoryRecord",
    "SearchHit",
    "HistoryEntry",
    "MemoryAgentError",
    "StoreError",
    "InvalidInput",
    "MemoryNotFound",
    "EmbeddingDimensionMismatch",
    "SchemaTooNew",
    "AlreadyApplied",
    "InvalidFilter",
    "Filter",
    "Eq",
    "In",
    "Range",
    "And",
    "Or",
    "Not",
    "parse_filter",
    "SEARCH_MODES",
    "rrf",
]


def __getattr__(name: str):
    # PostgresStore imports psycopg: only when someone asks for it (so it is not in __all__ either:
    # ``from memory_store import *`` must work without the postgres extra).
    if name == "PostgresStore":
        from memory_store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'memory_store' has no attribute {name!r}")
