"""One place that turns "a folder or a PostgreSQL URL" into a store.

``Memory.open``, every CLI ``--db`` and ``memory-agent migrate`` go through
:func:`open_store`, so a URL means the same thing everywhere. The PostgreSQL
backend (and psycopg) is imported only when a URL is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memory_store.embedders import Embedder

__all__ = ["POSTGRES_PREFIXES", "is_postgres_url", "store_exists", "open_store", "describe_location"]

POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(location: Any) -> bool:
    """True for ``postgresql://...`` / ``postgres://...`` (a store in PostgreSQL), False for a folder path."""
    return isinstance(location, str) and location.startswith(POSTGRES_PREFIXES)


def store_exists(location: str | Path) -> bool:
    """Whether ``location`` already holds a store, checked without creating anything.

    A folder holds one when it has the store's database file; a PostgreSQL URL always counts
    (the server is asked when the store is opened, and says itself what is wrong).
    """
    if is_postgres_url(location):
        return True
    from memory_store.schema import DB_NAME

    return (Path(location) / DB_NAME).is_file()


def open_store(location: str | Path, embedder: Embedder | None = None, index: str | None = None, *,
               dim: int | None = None, **kwargs: Any) -> Any:
    """A :class:`~memory_store.MemoryStore` for a folder, a ``PostgresStore`` for a PostgreSQL URL.

    ``index``: ``"flat"`` (exact) or ``"hnsw"``; None keeps what the store last used.
    Extra keyword arguments go to the store (``pool_size`` for PostgreSQL, ``ef_search``).
    """
    if is_postgres_url(location):
        from memory_store.postgres import PostgresStore

        return PostgresStore(str(location), embedder=embedder, index=index, dim=dim, **kwargs)
    from memory_store.store import MemoryStore

    return MemoryStore(Path(location), embedder=embedder, index=index, dim=dim, **kwargs)


def describe_location(location: str | Path) -> str:
    """The location as safe to print: a resolved folder, or the URL without its password."""
    if is_postgres_url(location):
        from memory_store.pg_schema import redact

        return redact(str(location))
    return str(Path(location).resolve())
