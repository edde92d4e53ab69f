"""JSONL export/import of a store (backup, migration between embedders).

One JSON object per line: ``id, user_id, text, created_at, updated_at,
metadata, hash`` plus optional ``history`` (list of events) and optional
``embedding`` (list of floats). Import keeps ids, timestamps, metadata and
history; it re-embeds texts with the store's embedder unless every line
carries an embedding of the store's width. With history, a deleted memory
is exported too, as ``{"deleted": true, "id", "user_id", "history"}`` (its
events are part of what was committed); import restores those events, and
the id sequence moves past them so a new memory never reuses a deleted id. The whole import is one
transaction and is validated (including id collisions with rows already in
the target store) before anything is written.
"""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_store.errors import InvalidInput
from memory_store.private import open_private
from memory_store.validation import check_metadata, check_text, check_timestamp, check_user, check_vectors

if TYPE_CHECKING:
    from memory_store.store import MemoryStore

__all__ = ["export_jsonl", "import_jsonl", "prepare_import"]

_EVENTS = ("ADD", "UPDATE", "DELETE")
# What export_jsonl writes; anything else in a line is refused (a forged or foreign file).
_FIELDS = {"id", "user_id", "text", "created_at", "updated_at", "metadata", "hash", "history", "embedding", "deleted"}
_EVENT_FIELDS = {"event", "old_text", "new_text", "actor", "source", "at"}
_MAX_ID = 2**63 - 1  # SQLite's INTEGER


def export_jsonl(store: "MemoryStore", path: str | Path, *, user_id: str | None = None,
                 include_history: bool = True, include_embeddings: bool = False) -> int:
    """Write the store (or one user's part) as JSONL, ids ascending; returns the count."""
    sql = ("SELECT id, user_id, text, created_at, updated_at, metadata, hash, "
           + ("embedding" if include_embeddings else "NULL") + " FROM memories")
    params: list[Any] = []
    if user_id is not None:
        sql += " WHERE user_id = ?"
        params.append(check_user(user_id))
    n = 0
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with store._reading() as conn:  # one snapshot: memories and history agree
        with open_private(tmp, "w", encoding="utf-8") as fh:  # an export holds memories: 0600
            for row in conn.cursor().execute(sql + " ORDER BY id", params):  # streamed, not fetchall
                item: dict[str, Any] = {"id": row[0], "user_id": row[1], "text": row[2], "created_at": row[3],
                                        "updated_at": row[4], "metadata": json.loads(row[5]), "hash": row[6]}
                if include_history:
                    item["history"] = [
                        {"event": h[0], "old_text": h[1], "new_text": h[2], "actor": h[3], "source": h[4],
                         "at": h[5]}
                        for h in conn.execute("SELECT event, old_text, new_text, actor, source, at FROM history"
                                              " WHERE memory_id = ? ORDER BY id", [row[0]])]
                if include_embeddings:
                    item["embedding"] = np.frombuffer(row[7], dtype=np.float32).tolist()
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
                n += 1
            if include_history:
                for item in _deleted(conn, user_id):
                    fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return n


def _deleted(conn: Any, user_id: str | None) -> list[dict[str, Any]]:
    """History of memories that no longer exist (deleted), one item per memory id."""
    sql = ("SELECT memory_id, user_id, event, old_text, new_text, actor, source, at FROM history"
           " WHERE memory_id NOT IN (SELECT id FROM memories)")
    params: list[Any] = []
    if user_id is not None:
        sql += " AND user_id = ?"
        params.append(user_id)
    out: list[dict[str, Any]] = []
    rows = conn.execute(sql + " ORDER BY memory_id, id", params).fetchall()
    for (mid, uid), group in groupby(rows, key=lambda r: (r[0], r[1])):
        out.append({"deleted": True, "id": mid, "user_id": uid, "history": [
            {"event": h[2], "old_text": h[3], "new_text": h[4], "actor": h[5], "source": h[6], "at": h[7]}
            for h in group]})
    return out


def _parse(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"{path}:{lineno}: not UTF-8: {exc}") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the stack
                raise InvalidInput(f"{path}:{lineno}: not JSON: {exc}") from None
            if not isinstance(item, dict):
                raise InvalidInput(f"{path}:{lineno}: expected an object")
            unknown = sorted(set(item) - _FIELDS)
            if unknown:
                raise InvalidInput(f"{path}:{lineno}: unknown field(s) {unknown}")
            if item.get("deleted", False) not in (True, False):
                raise InvalidInput(f"{path}:{lineno}: deleted must be true or false")
            history = item.get("history") or []
            if not isinstance(history, list):
                raise InvalidInput(f"{path}:{lineno}: history must be a list")
            for h in history:
                _check_event(h, f"{path}:{lineno}", need_at=item.get("deleted") is True)
            try:
                mid = item["id"]
                if isinstance(mid, bool) or not isinstance(mid, int) or not 1 <= mid <= _MAX_ID:
                    raise InvalidInput(f"{path}:{lineno}: id must be a positive int")
                check_user(item["user_id"])
                if item.get("deleted") is True:
                    deleted.append(item)
                    continue
                check_text(item["text"])
                item["created_at"] = check_timestamp(item.get("created_at"))
                item["updated_at"] = check_timestamp(item.get("updated_at") or item["created_at"])
                item["metadata_json"] = check_metadata(item.get("metadata") or {})
            except KeyError as exc:
                raise InvalidInput(f"{path}:{lineno}: missing field {exc}") from None
            items.append(item)
    ids = [i["id"] for i in items + deleted]
    if len(set(ids)) != len(ids):
        raise InvalidInput(f"{path}: duplicate ids")
    return items, deleted


def _check_event(h: Any, where: str, *, need_at: bool) -> None:
    """One history entry: a known event, known fields, texts as strings SQLite can store."""
    if not isinstance(h, dict) or h.get("event") not in _EVENTS or (need_at and not h.get("at")):
        raise InvalidInput(f"{where}: bad history entry {h!r}")
    unknown = sorted(set(h) - _EVENT_FIELDS)
    if unknown:
        raise InvalidInput(f"{where}: unknown field(s) {unknown} in history entry")
    for key in ("old_text", "new_text", "actor", "source", "at"):
        value = h.get(key)
        if value is not None and (not isinstance(value, str) or not _utf8_ok(value)):
            raise InvalidInput(f"{where}: history {key} must be a (valid Unicode) string or null, got {value!r}")


def _utf8_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (JSON "\ud800"): SQLite cannot store them
        return False
    return True


def _history_rows(item: dict[str, Any], events: list[dict[str, Any]], default_at: str | None) -> list[tuple]:
    return [(item["id"], item["user_id"], h["event"], h.get("old_text"), h.get("new_text"),
             str(h.get("actor") or "import"), h.get("source"), str(h.get("at") or default_at)) for h in events]


def prepare_import(store: Any, path: str | Path) -> tuple[list[tuple], np.ndarray, list[tuple], list[int]] | None:
    """An export parsed and checked for ``store`` (any backend), nothing written; None if it is empty.

    Returns the memory rows ``(id, user_id, text, created_at, updated_at, metadata_json, hash)``,
    their vectors (one row each, re-embedded unless every line carries one), the history
    rows ``(memory_id, user_id, event, old_text, new_text, actor, source, at)`` and every id
    the export names (deleted memories included).
    """
    from memory_store.writes import sha as _sha

    items, deleted = _parse(path)
    if not items and not deleted:
        return None
    if items and all("embedding" in i for i in items):
        vecs = check_vectors([i["embedding"] for i in items], len(items), store.dim)
    elif items:
        vecs = store._embed([i["text"] for i in items])
    else:
        vecs = np.zeros((0, store.dim), dtype=np.float32)
    rows, history = [], []
    for item in items:
        text = item["text"]
        rows.append((item["id"], item["user_id"], text, item["created_at"], item["updated_at"],
                     item["metadata_json"], _sha(text)))
        events = item.get("history")
        if not events:  # no history exported: record the import itself
            events = [{"event": "ADD", "new_text": text, "actor": "import", "at": item["created_at"]}]
        history += _history_rows(item, events, item["created_at"])
    for item in deleted:  # their events were checked to carry "at"
        history += _history_rows(item, item.get("history") or [], None)
    return rows, vecs, history, [r[0] for r in rows] + [d["id"] for d in deleted]


def import_jsonl(store: "MemoryStore", path: str | Path) -> int:
    """Load an export into ``store`` in one transaction; returns the count of (live) memories."""
    prepared = prepare_import(store, path)
    if prepared is None:
        return 0
    mem_rows, vecs, history, all_ids = prepared
    store._restore(mem_rows, vecs, history, all_ids)
    return len(mem_rows)
