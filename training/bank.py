"""A throw-away, in-memory copy of a memory bank, for scoring manager rollouts.

The Memory Manager's reward applies the sampled operations to a *copy* of the
bank the prompt was built from, then lets the frozen Answer Agent answer the
linked questions from that copy. Doing this against a real
:class:`memory_store.MemoryStore` would mean a SQLite file and a FAISS index
per completion; GRPO scores ``num_generations`` completions per prompt, every
step, so the copy must be cheap. This module keeps the bank as a list of
records plus one embedding matrix, searches it with a dot product (the same
ranking as the store's flat index: rows are L2-normalised), and shares the
base embeddings between the copies of one snapshot, so a copy costs a list
copy plus embedding the handful of texts the operations add or change.

A snapshot is a JSON string (the dataset column ``bank``): a list of
``{"id": int, "text": str, "timestamp": str | None, "speaker": str | None}``
records, oldest first, with the store's database ids. ``timestamp`` is the
conversation time of the last write (the store's ``updated_at``) and
``speaker`` the store's ``metadata["speaker"]``: the Answer Agent splits its
retrieval by speaker and shows dates, so both must survive the copy.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BankRecord", "SnapshotBank", "BankCache", "as_record", "dump_records", "load_records"]


@dataclass(frozen=True)
class BankRecord:
    id: int
    text: str
    timestamp: str | None = None
    speaker: str | None = None

    # The attribute names of memory_store.MemoryRecord, so pipeline code that
    # formats records (dates, speakers) reads ours unchanged.
    @property
    def created_at(self) -> str:
        return self.timestamp or ""

    @property
    def updated_at(self) -> str:
        return self.timestamp or ""

    @property
    def metadata(self) -> dict[str, Any]:
        return {"speaker": self.speaker} if self.speaker else {}

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "timestamp": self.timestamp, "speaker": self.speaker}


def dump_records(records: Sequence[BankRecord | dict | Any]) -> str:
    """Records (ours, dicts, or store ``MemoryRecord``s) -> the JSON column value."""
    return json.dumps([as_record(r).as_dict() for r in records], ensure_ascii=False)


def as_record(r: BankRecord | dict | Any) -> BankRecord:
    """A dict, a BankRecord or a store ``MemoryRecord``/``SearchHit`` -> BankRecord."""
    if isinstance(r, BankRecord):
        return r
    if isinstance(r, dict):
        return BankRecord(int(r["id"]), str(r["text"]), r.get("timestamp"), r.get("speaker"))
    ts = getattr(r, "updated_at", None) or getattr(r, "created_at", None)
    speaker = (getattr(r, "metadata", None) or {}).get("speaker")
    return BankRecord(int(r.id), str(r.text), ts, speaker if isinstance(speaker, str) else None)


def load_records(value: str | Sequence[dict]) -> list[BankRecord]:
    rows = json.loads(value) if isinstance(value, str) else value
    return [as_record(r) for r in rows]


@dataclass
class SnapshotBank:
    """Records + their embeddings. :meth:`copy` is cheap; mutate copies only."""

    records: list[BankRecord]
    vectors: np.ndarray  # (n, dim) float32, row i embeds records[i]
    embedder: Any = field(repr=False)

    @classmethod
    def build(cls, records: Sequence[BankRecord], embedder: Any) -> "SnapshotBank":
        texts = [r.text for r in records]
        dim = int(getattr(embedder, "dim", 0) or 0)
        vectors = (
            np.asarray(embedder.embed(texts), dtype=np.float32)
            if texts
            else np.zeros((0, dim), dtype=np.float32)
        )
        return cls(list(records), vectors, embedder)

    def copy(self) -> "SnapshotBank":
        # The matrix is shared until a mutation replaces it (copy-on-write below).
        return SnapshotBank(list(self.records), self.vectors, self.embedder)

    def __len__(self) -> int:
        return len(self.records)

    def ids(self) -> list[int]:
        return [r.id for r in self.records]

    def _index(self, mid: int) -> int:
        for i, r in enumerate(self.records):
            if r.id == mid:
                return i
        raise KeyError(mid)

    # -- the four operations, with database ids ---------------------------------
    def add(self, text: str, timestamp: str | None = None, speaker: str | None = None) -> int:
        new_id = max((r.id for r in self.records), default=0) + 1
        vec = np.asarray(self.embedder.embed([text]), dtype=np.float32)
        self.records.append(BankRecord(new_id, text, timestamp, speaker))
        self.vectors = np.vstack([self.vectors.reshape(-1, vec.shape[1]), vec])
        return new_id

    def update(self, mid: int, text: str, timestamp: str | None = None) -> None:
        i = self._index(mid)
        vec = np.asarray(self.embedder.embed([text]), dtype=np.float32)
        old = self.records[i]
        self.records[i] = BankRecord(mid, text, timestamp or old.timestamp, old.speaker)
        vectors = self.vectors.copy()
        vectors[i] = vec[0]
        self.vectors = vectors

    def delete(self, mid: int) -> None:
        i = self._index(mid)
        del self.records[i]
        self.vectors = np.delete(self.vectors, i, axis=0)

    def search_scored(self, query: str, k: int, *, speaker: str | None = None) -> list[tuple[BankRecord, float]]:
        """Top-k ``(record, cosine)`` pairs, best first; only ``speaker``'s records when given."""
        if not self.records or k <= 0:
            return []
        q = np.asarray(self.embedder.embed([query]), dtype=np.float32)[0]
        scores = self.vectors @ q
        order = np.argsort(-scores, kind="stable")  # stable: ties keep oldest-first order
        out = []
        for i in order:
            record = self.records[int(i)]
            if speaker is not None and record.speaker != speaker:
                continue
            out.append((record, float(scores[int(i)])))
            if len(out) == k:
                break
        return out

    def search(self, query: str, k: int, *, speaker: str | None = None) -> list[BankRecord]:
        """Top-k records by cosine similarity (rows are unit vectors), best first."""
        return [r for r, _ in self.search_scored(query, k, speaker=speaker)]

    def speakers(self) -> list[str]:
        """Distinct speakers, in order of first appearance (as the store lists them)."""
        seen: dict[str, None] = {}
        for r in self.records:
            if r.speaker:
                seen.setdefault(r.speaker)
        return list(seen)


class BankCache:
    """LRU of built :class:`SnapshotBank` objects keyed by the snapshot JSON.

    The ``num_generations`` completions of one prompt share a snapshot, so the
    embedding of the bank is paid once per prompt, not once per completion.
    """

    def __init__(self, embedder: Any, maxsize: int = 64):
        self.embedder = embedder
        self.maxsize = maxsize
        self._items: OrderedDict[int, tuple[str, SnapshotBank]] = OrderedDict()

    def get(self, snapshot: str | Sequence[dict]) -> SnapshotBank:
        key_text = snapshot if isinstance(snapshot, str) else json.dumps(list(snapshot), sort_keys=True)
        key = hash(key_text)
        hit = self._items.get(key)
        if hit is not None and hit[0] == key_text:
            self._items.move_to_end(key)
            return hit[1]
        bank = SnapshotBank.build(load_records(key_text), self.embedder)
        self._items[key] = (key_text, bank)
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return bank
