"""The FAISS side of the store: one sub-index per user, keyed by SQLite ids.

Why per user: every search is scoped to one user, so a sub-index per user
makes user isolation structural (another user's vectors are not even in the
searched index) and keeps search cost proportional to that user's memories,
with no selector and no over-fetching when one user dominates the store.

* ``flat`` (default): ``IndexFlatIP`` over unit vectors = exact cosine. Ids
  live in a position->id array plus an id->position dict (the role of
  ``IndexIDMap2``). Removal swaps the removed rows with the last rows (in the
  index's own storage) and then calls ``remove_ids`` on the tail range, so a
  delete costs O(removed) copies plus one cheap scan, never a rebuild or an
  O(N) memmove (``IndexIDMap2.remove_ids`` would shift every later row).
  Single-query search is a BLAS matrix-vector product over the index storage
  (measured faster than ``IndexFlat.search`` for one query on 2 cores).
* ``hnsw``: ``IndexHNSWFlat(M=32, METRIC_INNER_PRODUCT)``, efConstruction 128
  (FAISS's default of 40 builds ~4x faster but a poorer graph: at 1M clustered
  benchmark vectors recall@10 was 0.85 with 40 and 1.00 with 128, both at
  efSearch 128; see docs/store.md). FAISS cannot remove
  from HNSW, so deletes and the old vector of an update become tombstones,
  filtered at search time with an ``IDSelectorBitmap`` of live positions
  (updated in place, one bit per delete) and an exact fallback when the filter leaves fewer than k; a user's graph is
  rebuilt from its live vectors once tombstones pass ``REBUILD_FRACTION``.

``save``/``load`` write one file with a JSON header (the change counter it
reflects, the database uuid, a crc32 of the payload) so a missing, truncated,
corrupt, foreign or stale file is detected and the store rebuilds or replays.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from memory_store.private import open_private

__all__ = ["FlatUserIndex", "HNSWUserIndex", "VectorIndex", "IndexLoadError", "INDEX_KINDS", "HNSW_EF_SEARCH"]

INDEX_KINDS = ("flat", "hnsw")
MAGIC = b"MSIDX001"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 128
REBUILD_FRACTION = 0.2


class IndexLoadError(ValueError):
    """The saved index file cannot be used (the store then rebuilds it)."""


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first."""
    if k >= scores.shape[0]:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


class FlatUserIndex:
    """Exact inner-product index of one user's vectors."""

    kind = "flat"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.index = faiss.IndexFlatIP(dim)
        self._ids = np.empty(0, dtype=np.int64)
        self.pos: dict[int, int] = {}

    def __len__(self) -> int:
        return self.index.ntotal

    def _view(self) -> np.ndarray:
        # Writable numpy view of the index's own storage (re-fetched: add() may realloc).
        n = self.index.ntotal
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return faiss.rev_swig_ptr(self.index.get_xb(), n * self.dim).reshape(n, self.dim)

    def ids(self) -> np.ndarray:
        return self._ids[: self.index.ntotal].copy()

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        start = self.index.ntotal
        n = len(ids)
        if n == 0:
            return
        self.index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        need = start + n
        if need > self._ids.shape[0]:  # amortised growth of the position -> id array
            grown = np.empty(max(need, 2 * self._ids.shape[0], 64), dtype=np.int64)
            grown[:start] = self._ids[:start]
            self._ids = grown
        self._ids[start:need] = ids
        self.pos.update(zip(ids.tolist(), range(start, need)))

    def remove(self, ids: Iterable[int]) -> int:
        positions = sorted((self.pos.pop(i) for i in ids if i in self.pos), reverse=True)
        if not positions:
            return 0
        xb = self._view()
        n = self.index.ntotal
        # Descending order: each removed slot takes the current last row, which
        # is never itself pending removal (pending positions are all smaller).
        for p in positions:
            last = n - 1
            if p != last:
                xb[p] = xb[last]
                moved = int(self._ids[last])
                self._ids[p] = moved
                self.pos[moved] = p
            n -= 1
        self.index.remove_ids(faiss.IDSelectorRange(n, self.index.ntotal))
        return len(positions)

    def vectors(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        keep = np.array([i for i in ids if i in self.pos], dtype=np.int64)
        rows = np.array([self.pos[int(i)] for i in keep], dtype=np.int64)
        return keep, self._view()[rows] if len(rows) else np.empty((0, self.dim), np.float32)

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.index.ntotal
        if n == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores = self._view() @ q
        top = _topk(scores, min(k, n))
        return self._ids[top].copy(), scores[top]

    def to_bytes(self) -> tuple[dict, list]:
        # Buffers, not copies: the vectors are written straight from FAISS's storage.
        return {"n": len(self)}, [self.ids().data, self._view().data]

    @classmethod
    def from_bytes(cls, dim: int, info: dict, blobs: list[bytes]) -> "FlatUserIndex":
        n = int(info["n"])
        ids = np.frombuffer(blobs[0], dtype=np.int64)
        vecs = np.frombuffer(blobs[1], dtype=np.float32)
        if ids.shape[0] != n or vecs.shape[0] != n * dim:
            raise IndexLoadError("flat sub-index has the wrong size")
        out = cls(dim)
        out.add(ids.copy(), vecs.reshape(n, dim))
        return out


class HNSWUserIndex:
    """Approximate index of one user's vectors; deletes are tombstones."""

    kind = "hnsw"

    def __init__(self, dim: int, ef_search: int = HNSW_EF_SEARCH) -> None:
        self.dim = dim
        self.ef_search = ef_search
        self.index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self._ids = np.empty(0, dtype=np.int64)  # position -> id, -1 = tombstone
        self.pos: dict[int, int] = {}
        self.tombs: set[int] = set()
        # Live positions as a packed bitmap that an IDSelectorBitmap reads in
        # place: a delete flips one bit instead of rebuilding a selector.
        self._bits = np.zeros(0, dtype=np.uint8)
        self._params: faiss.SearchParametersHNSW | None = None
        self._keep: tuple = ()  # keeps the selector (and its buffer) alive while FAISS points at them

    def __len__(self) -> int:
        return len(self.pos)

    def _view(self) -> np.ndarray:
        n = self.index.ntotal
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        storage = faiss.downcast_index(self.index.storage)
        return faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def ids(self) -> np.ndarray:
        return np.array(sorted(self.pos), dtype=np.int64)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        start = self.index.ntotal
        self.index.add(np.ascontiguousarray(vecs, dtype=np.float32))
        need = start + len(ids)
        if need > self._ids.shape[0]:
            grown = np.full(max(need, 2 * self._ids.shape[0], 64), -1, dtype=np.int64)
            grown[:start] = self._ids[:start]
            self._ids = grown
        self._ids[start:need] = ids
        self.pos.update(zip(ids.tolist(), range(start, need)))
        self._set_bits(np.arange(start, need, dtype=np.int64), True)

    def _set_bits(self, positions: np.ndarray, alive: bool) -> None:
        need = (int(positions.max()) >> 3) + 1 if len(positions) else 0
        if need > self._bits.shape[0]:
            grown = np.zeros(max(need, 2 * self._bits.shape[0], 64), dtype=np.uint8)
            grown[: self._bits.shape[0]] = self._bits
            self._bits = grown
            self._params = None  # the selector pointed at the old buffer
        masks = np.left_shift(1, positions & 7).astype(np.uint8)
        if alive:
            np.bitwise_or.at(self._bits, positions >> 3, masks)
        else:
            np.bitwise_and.at(self._bits, positions >> 3, ~masks)

    def remove(self, ids: Iterable[int]) -> int:
        gone = [self.pos.pop(i) for i in ids if i in self.pos]
        if gone:
            self._ids[gone] = -1
            self.tombs.update(gone)
            self._set_bits(np.array(gone, dtype=np.int64), False)
            if len(self.tombs) > REBUILD_FRACTION * self.index.ntotal:
                self._compact()
        return len(gone)

    def _compact(self) -> None:
        """Rebuild the graph from live vectors (FAISS HNSW has no remove_ids)."""
        live = np.array(sorted(self.pos.values()), dtype=np.int64)
        ids = self._ids[live].copy()
        vecs = self._view()[live].copy() if len(live) else np.empty((0, self.dim), np.float32)
        fresh = HNSWUserIndex(self.dim, self.ef_search)
        fresh.add(ids, vecs)
        self.__dict__.update(fresh.__dict__)

    def vectors(self, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        keep = np.array([i for i in ids if i in self.pos], dtype=np.int64)
        rows = np.array([self.pos[int(i)] for i in keep], dtype=np.int64)
        return keep, self._view()[rows] if len(rows) else np.empty((0, self.dim), np.float32)

    def _search_params(self, k: int) -> faiss.SearchParametersHNSW:
        if self._params is None or (self.tombs and not self._keep):
            params = faiss.SearchParametersHNSW()
            self._keep = ()
            if self.tombs:  # without tombstones no selector: the plain (fastest) walk
                sel = faiss.IDSelectorBitmap(self._bits.shape[0], faiss.swig_ptr(self._bits))
                params.sel = sel
                self._keep = (sel, self._bits)
            self._params = params
        self._params.efSearch = max(self.ef_search, k)
        return self._params

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = len(self.pos)
        if live == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        k = min(k, live)
        dist, lab = self.index.search(q.reshape(1, -1), k, params=self._search_params(k))
        ok = lab[0] >= 0
        if int(ok.sum()) < k:  # the tombstone filter starved the graph walk: go exact
            rows = np.array(sorted(self.pos.values()), dtype=np.int64)
            scores = self._view()[rows] @ q
            top = _topk(scores, k)
            return self._ids[rows[top]].copy(), scores[top]
        return self._ids[lab[0][ok]].copy(), dist[0][ok]

    def to_bytes(self) -> tuple[dict, list]:
        raw = faiss.serialize_index(self.index)
        return {"ntotal": int(self.index.ntotal)}, [self._ids[: self.index.ntotal].copy().data, raw.data]

    @classmethod
    def from_bytes(cls, dim: int, info: dict, blobs: list[bytes]) -> "HNSWUserIndex":
        out = cls(dim)
        try:
            out.index = faiss.deserialize_index(np.frombuffer(blobs[1], dtype=np.uint8).copy())
        except RuntimeError as exc:  # FAISS reports bad bytes as RuntimeError
            raise IndexLoadError(f"bad HNSW blob: {exc}") from exc
        n = int(info["ntotal"])
        ids = np.frombuffer(blobs[0], dtype=np.int64).copy()
        if out.index.ntotal != n or ids.shape[0] != n or out.index.d != dim:
            raise IndexLoadError("HNSW sub-index has the wrong size")
        out._ids = ids
        out.pos = {int(i): p for p, i in enumerate(ids.tolist()) if i >= 0}
        out.tombs = {p for p, i in enumerate(ids.tolist()) if i < 0}
        out._set_bits(np.flatnonzero(ids >= 0).astype(np.int64), True)
        return out


_CLASSES = {"flat": FlatUserIndex, "hnsw": HNSWUserIndex}


class VectorIndex:
    """All users' sub-indexes plus the id -> user map and the change counter seen."""

    def __init__(self, dim: int, kind: str = "flat", ef_search: int = HNSW_EF_SEARCH) -> None:
        if kind not in _CLASSES:
            raise ValueError(f"unknown index kind {kind!r}")
        self.dim = dim
        self.kind = kind
        self.ef_search = ef_search
        self.users: dict[str, FlatUserIndex | HNSWUserIndex] = {}
        self.owner: dict[int, str] = {}
        self.seq = 0  # last change counter folded into this index

    def __len__(self) -> int:
        return len(self.owner)

    def _user(self, user_id: str):
        sub = self.users.get(user_id)
        if sub is None:
            sub = self.users[user_id] = (HNSWUserIndex(self.dim, self.ef_search) if self.kind == "hnsw"
                                         else FlatUserIndex(self.dim))
        return sub

    def set_ef_search(self, ef: int) -> None:
        self.ef_search = ef
        for sub in self.users.values():
            if isinstance(sub, HNSWUserIndex):
                sub.ef_search = ef

    def add(self, user_id: str, ids: np.ndarray, vecs: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        present = [int(i) for i in ids if int(i) in self.owner]
        if present:  # upsert semantics keep replay idempotent
            self.remove(present)
        self._user(user_id).add(ids, vecs)
        self.owner.update(dict.fromkeys(ids.tolist(), user_id))

    def remove(self, ids: Iterable[int]) -> int:
        by_user: dict[str, list[int]] = {}
        for i in ids:
            u = self.owner.pop(int(i), None)
            if u is not None:
                by_user.setdefault(u, []).append(int(i))
        done = 0
        for u, group in by_user.items():
            sub = self.users[u]
            done += sub.remove(group)
            if len(sub) == 0:
                del self.users[u]
        return done

    def search(self, user_id: str, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sub = self.users.get(user_id)
        if sub is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return sub.search(q, k)

    def search_subset(self, user_id: str, q: np.ndarray, k: int, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Exact search restricted to ``ids`` (metadata filters): always k when k match."""
        sub = self.users.get(user_id)
        if sub is None:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        keep, vecs = sub.vectors(ids)
        if len(keep) == 0:
            return keep, np.empty(0, np.float32)
        scores = vecs @ q
        top = _topk(scores, min(k, len(keep)))
        return keep[top], scores[top]

    def copy(self) -> "VectorIndex":
        """An independent deep copy (the in-memory store's copy-on-write forks use it)."""
        out = VectorIndex(self.dim, self.kind, self.ef_search)
        for user, sub in self.users.items():
            info, parts = sub.to_bytes()
            clone = _CLASSES[self.kind].from_bytes(self.dim, info, [bytes(memoryview(b).cast("B")) for b in parts])
            if isinstance(clone, HNSWUserIndex):
                clone.ef_search = self.ef_search
            out.users[user] = clone
        out.owner = dict(self.owner)
        out.seq = self.seq
        return out

    def user_ids(self, user_id: str) -> np.ndarray:
        sub = self.users.get(user_id)
        return sub.ids() if sub is not None else np.empty(0, np.int64)

    # ---- persistence -------------------------------------------------------------

    def save(self, path: Path, db_uuid: str) -> None:
        """Atomic write (temp file, fsync, rename): readers see old or new, never half."""
        users, blobs = [], []
        crc, size = 0, 0
        for u, sub in self.users.items():
            info, parts = sub.to_bytes()
            parts = [memoryview(b).cast("B") for b in parts]
            info.update(user=u, sizes=[b.nbytes for b in parts])
            users.append(info)
            for b in parts:  # running checksum: no joined copy of a possibly huge payload
                crc = zlib.crc32(b, crc)
                size += b.nbytes
            blobs.extend(parts)
        header = json.dumps({"kind": self.kind, "dim": self.dim, "seq": self.seq, "db_uuid": db_uuid,
                             "users": users, "crc32": crc, "size": size}).encode()
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open_private(tmp, "wb") as fh:
                fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
                for b in blobs:
                    fh.write(b)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @staticmethod
    def peek(path: Path) -> dict | None:
        """The header of a saved index (seq, db_uuid, kind...) or None if unreadable."""
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
                if len(head) < 16 or head[:8] != MAGIC:
                    return None
                (hlen,) = struct.unpack("<Q", head[8:])
                header = json.loads(fh.read(min(hlen, 1 << 26)))
        except (OSError, ValueError, UnicodeDecodeError, struct.error):
            return None
        return header if isinstance(header, dict) else None

    @classmethod
    def load(cls, path: Path, *, dim: int, kind: str, db_uuid: str,
             ef_search: int = HNSW_EF_SEARCH) -> "VectorIndex":
        """Read a saved index or raise ``IndexLoadError`` saying why it is unusable."""
        try:
            data = memoryview(path.read_bytes())  # slices of a memoryview do not copy
        except OSError as exc:
            raise IndexLoadError(f"cannot read {path}: {exc}") from exc
        if len(data) < 16 or bytes(data[:8]) != MAGIC:
            raise IndexLoadError("not an index file (bad magic)")
        (hlen,) = struct.unpack("<Q", data[8:16])
        try:
            header = json.loads(bytes(data[16 : 16 + hlen]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise IndexLoadError(f"bad header: {exc}") from exc
        if not isinstance(header, dict):
            raise IndexLoadError("bad header")
        payload = data[16 + hlen :]
        if len(payload) != header.get("size") or zlib.crc32(payload) != header.get("crc32"):
            raise IndexLoadError("truncated or corrupt payload (size/crc32 mismatch)")
        if header.get("db_uuid") != db_uuid:
            raise IndexLoadError("index belongs to another database")
        if header.get("dim") != dim or header.get("kind") != kind:
            raise IndexLoadError("index dim/kind differs from the store's")
        out = cls(dim, kind, ef_search)
        out.seq = int(header["seq"])
        offset = 0
        try:
            for info in header["users"]:
                parts = []
                for size in info["sizes"]:
                    parts.append(payload[offset : offset + size])
                    offset += size
                sub = _CLASSES[kind].from_bytes(dim, info, parts)
                if isinstance(sub, HNSWUserIndex):
                    sub.ef_search = ef_search
                out.users[info["user"]] = sub
                out.owner.update(dict.fromkeys(sub.ids().tolist(), info["user"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexLoadError(f"bad sub-index: {exc}") from exc
        return out
