"""Move a whole store between backends (SQLite folder <-> PostgreSQL URL), keeping ids and history.

One path for every direction: the source writes the JSONL export both stores
read (:mod:`memory_store.transfer`; embeddings included, so nothing is
re-embedded and no embedder is needed) into a private temporary folder, and
the target, which must be empty, loads it in ONE transaction. Ids, times,
metadata, every history event (deleted memories' too) move; the target's id
sequence continues past every id the source ever used. Receipts of
exactly-once writes are not carried: let ingestion jobs finish first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from memory_store.errors import InvalidInput
from memory_store.opening import describe_location, is_postgres_url, open_store

__all__ = ["migrate_store"]


def migrate_store(source: str | Path, target: str | Path, *, index: str | None = None) -> dict[str, Any]:
    """Copy the store at ``source`` into the new or empty store at ``target``; returns a summary.

    Raises ``InvalidInput`` if the target already holds memories or history ids
    the source uses (nothing is written then), ``StoreError`` if either cannot be opened.
    """
    if str(source) == str(target):
        raise InvalidInput("--from and --to name the same store")
    with tempfile.TemporaryDirectory(prefix="memory-agent-migrate-") as tmp:  # 0700: it holds memories
        dump = Path(tmp) / "store.jsonl"
        with open_store(source) as src:
            n = src.export_jsonl(dump, include_history=True, include_embeddings=True)
            dim, users = src.dim, len(src.users())
        with open_store(target, index=index, dim=dim) as dst:
            if dst.count():
                raise InvalidInput(f"the target {describe_location(target)} already holds {dst.count()} memories;"
                                   " migrate into a new or empty store")
            if is_postgres_url(target):
                from memory_store.pg_transfer import import_jsonl
            else:
                from memory_store.transfer import import_jsonl
            imported = import_jsonl(dst, dump)
    return {"from": describe_location(source), "to": describe_location(target), "memories": imported,
            "exported": n, "users": users, "dim": dim}
