"""Validated write plans: what both stores commit, built once.

``add_many`` and ``apply`` check every argument and embed every text before
anything changes; the result is a *plan*, a list of tuples the store commits
in one transaction (``MemoryStore._commit``, ``InMemoryStore._commit``):

``("ADD", text, metadata_json, vector, created_at)`` | ``("UPDATE", id, text, vector)``
| ``("DELETE", id)`` | ``("NOOP",)``

Ids are checked against the user by the store itself, under its write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memory_store.errors import InvalidInput
from memory_store.records import Add, Delete, Update
from memory_store.validation import (
    check_label, check_metadata, check_ops, check_text, check_timestamp, check_user, check_vectors,
)

__all__ = ["Plan", "plan_add_many", "plan_apply"]

#: (user_id, plan, actor, source, timestamp of the batch)
Plan = tuple[str, list[tuple], str, str | None, str]
Embed = Callable[[list[str]], np.ndarray]


def plan_add_many(texts: Sequence[str], user_id: str, *, embeddings: Any, metadatas: Sequence[Any] | None,
                  timestamps: Sequence[str | None] | None, actor: str, source: str | None, embed: Embed,
                  dim: int) -> Plan | None:
    """The plan of ``add_many`` (None for no texts), every argument checked first."""
    user_id = check_user(user_id)
    if isinstance(texts, str):
        raise InvalidInput("add_many() takes a sequence of texts, not a string")
    texts = [check_text(t) for t in texts]
    n = len(texts)
    metas = [check_metadata(m) for m in (metadatas if metadatas is not None else [None] * n)]
    stamps = [check_timestamp(t) for t in timestamps] if timestamps is not None else [check_timestamp(None)] * n
    if len(metas) != n or len(stamps) != n:
        raise InvalidInput("metadatas/timestamps must have one entry per text")
    actor = check_label(actor, "actor", optional=False)
    source = check_label(source, "source", optional=True)
    if n == 0:
        return None
    vecs = check_vectors(embeddings, n, dim) if embeddings is not None else embed(texts)
    plan = [("ADD", t, m, v, s) for t, m, v, s in zip(texts, metas, vecs, stamps)]
    return user_id, plan, actor, source, stamps[0]


def plan_apply(ops: Sequence[Any], user_id: str, *, actor: str, source: str | None, timestamp: str | None,
               embed: Embed) -> Plan:
    """The plan of ``apply``: op shapes, texts and metadata checked, texts embedded in one call."""
    user_id = check_user(user_id)
    ts = check_timestamp(timestamp)
    actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
    parsed, texts = check_ops(ops, user_id)
    vecs = iter(embed(texts)) if texts else iter(())
    plan: list[tuple] = []
    for op in parsed:
        if isinstance(op, Add):
            plan.append(("ADD", op.text, check_metadata(op.metadata), next(vecs), ts))
        elif isinstance(op, Update):
            plan.append(("UPDATE", op.id, op.text, next(vecs)))
        elif isinstance(op, Delete):
            plan.append(("DELETE", op.id))
        else:
            plan.append(("NOOP",))
    return user_id, plan, actor, source, ts
