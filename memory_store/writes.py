"""The public write methods shared by the durable stores (SQLite and PostgreSQL).

Each store keeps its own transaction (``_commit``) and embedder call
(``_embed``); the argument checking, planning and the shape of the results
live here once, so ``add``, ``add_many``, ``update``, ``delete`` and ``apply``
cannot drift apart between backends.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from memory_store.plans import PlanDelete, PlanStep, PlanUpdate, plan_add_many, plan_apply
from memory_store.records import AppliedOp, MemoryRecord
from memory_store.validation import check_id, check_label, check_receipts, check_text, check_timestamp, check_user

__all__ = ["WriteMethods", "sha", "record", "applied"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record(row: Sequence[Any], cls: type = MemoryRecord, **extra: Any) -> Any:
    """A record from a ``(id, user_id, text, created_at, updated_at, metadata_json, hash)`` row.

    model_construct: rows come from our own schema, re-validating is wasted time."""
    meta = row[5] if isinstance(row[5], dict) else json.loads(row[5])
    return cls.model_construct(id=row[0], user_id=row[1], text=row[2], created_at=row[3],
                               updated_at=row[4], metadata=meta, hash=row[6], **extra)


def applied(op: str, mid: int | None, old: str | None, new: str | None) -> AppliedOp:
    # model_construct: built from already-validated values; per-row validation
    # was ~15% of add_many's time.
    return AppliedOp.model_construct(op=op, id=mid, old_text=old, new_text=new)


class WriteMethods:
    """Mixin: needs ``dim``, ``_embed(texts)`` and ``_commit(user_id, plan, actor, source, ts, receipts=())``
    returning ``(applied ops, {id: row before the batch})``."""

    dim: int

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _commit(self, user_id: str, plan: list[PlanStep], actor: str, source: str | None, ts: str,
                receipts: Sequence[str] = ()) -> tuple[list[AppliedOp], dict[int, tuple]]:
        raise NotImplementedError

    def add(self, text: str, user_id: str, metadata: dict[str, Any] | None = None, *,
            timestamp: str | None = None, actor: str = "user", source: str | None = None) -> int:
        """Add one memory; returns its database id."""
        return self.add_many([text], user_id, metadatas=[metadata], timestamps=[timestamp],
                             actor=actor, source=source)[0]

    def add_many(self, texts: Sequence[str], user_id: str, *, embeddings: Any = None,
                 metadatas: Sequence[dict[str, Any] | None] | None = None,
                 timestamps: Sequence[str | None] | None = None, actor: str = "user",
                 source: str | None = None) -> list[int]:
        """Add many memories in one transaction (all or none); ids in input order."""
        planned = plan_add_many(texts, user_id, embeddings=embeddings, metadatas=metadatas, timestamps=timestamps,
                                actor=actor, source=source, embed=self._embed, dim=self.dim)
        if planned is None:
            return []
        return [a.id for a in self._commit(*planned)[0]]

    def update(self, memory_id: int, text: str, user_id: str, *, timestamp: str | None = None,
               actor: str = "user", source: str | None = None) -> MemoryRecord:
        """Replace a memory's text (re-embedded); returns the updated record."""
        mid, user_id, text = check_id(memory_id), check_user(user_id), check_text(text)
        ts = check_timestamp(timestamp)
        actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
        vec = self._embed([text])[0]
        _, before = self._commit(user_id, [PlanUpdate(mid, text, vec)], actor, source, ts)
        old = before[mid]  # the new record, built from the same transaction's view
        return record((old[0], old[1], text, old[3], ts, old[5], sha(text)))

    def delete(self, memory_id: int, user_id: str, *, actor: str = "user",
               source: str | None = None) -> MemoryRecord:
        """Delete a memory; returns the record as it was."""
        mid, user_id = check_id(memory_id), check_user(user_id)
        actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
        _, before = self._commit(user_id, [PlanDelete(mid)], actor, source, check_timestamp(None))
        return record(before[mid])  # read inside the deleting transaction: exactly what was deleted

    def apply(self, ops: Sequence[Any], user_id: str, *, actor: str = "agent", source: str | None = None,
              timestamp: str | None = None, receipts: Sequence[str] = ()) -> list[AppliedOp]:
        """Apply a batch of Add/Update/Delete/Noop in ONE transaction: all land or none.

        Everything is validated before any change: op shapes and texts here, ids
        (must exist for ``user_id``) under the write lock. An UPDATE or DELETE of an
        id the same batch already deleted raises ``MemoryNotFound`` (nothing applied).
        ``receipts`` (keys naming what this write is, e.g. ``"job-7:3"`` for a job's
        fourth turn) are recorded with it, atomically; a key the user already holds
        raises ``AlreadyApplied`` and nothing is applied. An empty ``ops`` with
        receipts records only the receipts (a turn that changed nothing).
        """
        receipts = check_receipts(receipts)
        return self._commit(*plan_apply(ops, user_id, actor=actor, source=source, timestamp=timestamp,
                                        embed=self._embed), receipts=receipts)[0]
