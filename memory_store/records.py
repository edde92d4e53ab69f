"""Typed values of the memory store: records, search hits, history, operations.

These are the contract between the store and its callers (the Memory Manager
emits ``StoreOp`` batches; the agent reads ``MemoryRecord``/``SearchHit``).
Pydantic gives validation of operations coming from model output (``extra=
"forbid"`` rejects hallucinated fields) and immutable records for readers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter

__all__ = [
    "MemoryRecord",
    "SearchHit",
    "HistoryEntry",
    "Add",
    "Update",
    "Delete",
    "Noop",
    "StoreOp",
    "AppliedOp",
    "STORE_OP_ADAPTER",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class MemoryRecord(BaseModel):
    """One stored memory as read back from SQLite (the source of truth)."""

    model_config = _FROZEN

    id: int
    user_id: str
    text: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    hash: str


class SearchHit(MemoryRecord):
    """A record plus its inner-product score (cosine, vectors are normalised)."""

    score: float


class HistoryEntry(BaseModel):
    """One ADD/UPDATE/DELETE event of one memory, oldest first in ``history()``."""

    model_config = _FROZEN

    id: int
    memory_id: int
    user_id: str
    event: Literal["ADD", "UPDATE", "DELETE"]
    old_text: str | None
    new_text: str | None
    actor: str
    source: str | None
    at: str




class Add(BaseModel):
    """Add a new memory for the batch's user."""

    model_config = _FROZEN
    op: Literal["ADD"] = "ADD"
    text: StrictStr  # strict: bytes are refused here as in add(), not decoded
    metadata: dict[str, Any] = Field(default_factory=dict)


class Update(BaseModel):
    """Replace the text of an existing memory (database id)."""

    model_config = _FROZEN
    op: Literal["UPDATE"] = "UPDATE"
    id: int
    text: StrictStr


class Delete(BaseModel):
    """Delete an existing memory (database id)."""

    model_config = _FROZEN
    op: Literal["DELETE"] = "DELETE"
    id: int


class Noop(BaseModel):
    """Do nothing (kept so a model's decision is recorded in the batch)."""

    model_config = _FROZEN
    op: Literal["NOOP"] = "NOOP"


StoreOp = Annotated[Union[Add, Update, Delete, Noop], Field(discriminator="op")]
STORE_OP_ADAPTER: TypeAdapter = TypeAdapter(StoreOp)


class AppliedOp(BaseModel):
    """What one op of ``apply()`` did: its id (new id for ADD, None for NOOP)."""

    model_config = _FROZEN

    op: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    id: int | None
    old_text: str | None = None
    new_text: str | None = None
