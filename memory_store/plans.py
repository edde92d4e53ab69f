"""Validated write plans: what both stores commit, built once.

``add_many`` and ``apply`` check every argument and embed every text before
anything changes; the result is a *plan*, a list of typed steps the store
commits in one transaction (``_commit`` of each store):
:class:`PlanAdd` | :class:`PlanUpdate` | :class:`PlanDelete` | :class:`PlanNoop`.

Ids are checked against the user by the store itself, under its write lock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from memory_store.errors import InvalidInput
from memory_store.records import Add, Delete, Update
from memory_store.validation import (
    check_label, check_metadata, check_ops, check_text, check_timestamp, check_user, check_vectors,
)

__all__ = ["Plan", "PlanStep", "PlanAdd", "PlanUpdate", "PlanDelete", "PlanNoop", "plan_add_many", "plan_apply"]


class PlanAdd(NamedTuple):
    text: str
    metadata_json: str
    vec: np.ndarray
    created_at: str


class PlanUpdate(NamedTuple):
    id: int
    text: str
    vec: np.ndarray


class PlanDelete(NamedTuple):
    id: int


class PlanNoop(NamedTuple):
    pass


PlanStep = PlanAdd | PlanUpdate | PlanDelete | PlanNoop
#: (user_id, plan, actor, source, timestamp of the batch)
Plan = tuple[str, list[PlanStep], str, str | None, str]
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
    plan: list[PlanStep] = [PlanAdd(t, m, v, s) for t, m, v, s in zip(texts, metas, vecs, stamps)]
    return user_id, plan, actor, source, stamps[0]


def plan_apply(ops: Sequence[Any], user_id: str, *, actor: str, source: str | None, timestamp: str | None,
               embed: Embed) -> Plan:
    """The plan of ``apply``: op shapes, texts and metadata checked, texts embedded in one call."""
    user_id = check_user(user_id)
    ts = check_timestamp(timestamp)
    actor, source = check_label(actor, "actor", optional=False), check_label(source, "source", optional=True)
    parsed, texts = check_ops(ops, user_id)
    vecs = iter(embed(texts)) if texts else iter(())
    plan: list[PlanStep] = []
    for op in parsed:
        if isinstance(op, Add):
            plan.append(PlanAdd(op.text, check_metadata(op.metadata), next(vecs), ts))
        elif isinstance(op, Update):
            plan.append(PlanUpdate(op.id, op.text, next(vecs)))
        elif isinstance(op, Delete):
            plan.append(PlanDelete(op.id))
        else:
            plan.append(PlanNoop())
    return user_id, plan, actor, source, ts
