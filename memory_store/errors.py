"""Typed errors of the memory store.

The store is the bottom layer, so the root of the project's error hierarchy
lives here; ``memory_agent.errors`` re-exports these and adds the agent's own.
Every error a user can cause is one of these, raised before anything changes.
"""

from __future__ import annotations

__all__ = [
    "MemoryAgentError",
    "StoreError",
    "InvalidInput",
    "MemoryNotFound",
    "EmbeddingDimensionMismatch",
    "SchemaTooNew",
    "AlreadyApplied",
]


class MemoryAgentError(Exception):
    """Root of every error raised on purpose by this project."""


class StoreError(MemoryAgentError):
    """Something about the store itself is wrong (folder, schema, index)."""


class InvalidInput(MemoryAgentError, ValueError):
    """A caller passed a value the store refuses (empty text, bad user_id...)."""


class MemoryNotFound(MemoryAgentError, KeyError):
    """No memory with that id exists *for that user* (other users' ids look the same)."""

    def __init__(self, memory_id: object, user_id: str | None = None):
        self.memory_id = memory_id
        self.user_id = user_id
        super().__init__(f"no memory {memory_id!r} for user {user_id!r}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class EmbeddingDimensionMismatch(InvalidInput):
    """An embedding's width differs from the store's."""


class SchemaTooNew(StoreError):
    """The store folder was written by a newer version of this library."""


class AlreadyApplied(MemoryAgentError):
    """A write carried a receipt the store already holds for that user: it was applied before.

    Receipts make retried writes exactly-once (a resumed ingestion job, a client
    retrying after a lost reply); nothing of the refused batch was applied.
    """

    def __init__(self, keys: list[str], user_id: str):
        self.keys, self.user_id = keys, user_id
        super().__init__(f"already applied for user {user_id!r}: {', '.join(keys[:5])}")
