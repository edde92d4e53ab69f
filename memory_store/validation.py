"""Input checks shared by the store's methods.

Every public method validates its arguments here *before* touching SQLite or
the index, so a bad call raises a typed error and changes nothing. These are
runtime checks, so they raise (never ``assert``, which ``python -O`` strips).
"""

from __future__ import annotations

import json
import operator
from datetime import datetime, timezone
from typing import Any

import numpy as np

from pydantic import ValidationError

from memory_store.errors import EmbeddingDimensionMismatch, InvalidInput, MemoryNotFound
from memory_store.keyword import SEARCH_MODES
from memory_store.records import STORE_OP_ADAPTER, Add, Delete, Noop, Update

__all__ = [
    "check_user",
    "check_text",
    "check_receipts",
    "check_id",
    "check_k",
    "check_metadata",
    "check_timestamp",
    "check_label",
    "check_vectors",
    "check_mode",
    "check_ops",
    "now_iso",
    "canonical_time",
]


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _utf8(value: str, what: str) -> str:
    """Refuse strings SQLite cannot store (lone surrogates): checked before anything changes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid Unicode text (lone surrogate)") from None
    return value


def check_user(user_id: Any) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidInput(f"user_id must be a non-empty string, got {user_id!r}")
    return _utf8(user_id, "user_id")


def check_text(text: Any, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"{what} must not be empty or whitespace")
    return _utf8(text, what)


def check_id(memory_id: Any) -> int:
    if isinstance(memory_id, bool):
        raise InvalidInput(f"memory id must be an int, got {memory_id!r}")
    try:
        return operator.index(memory_id)  # int and numpy ints, not floats or strings
    except TypeError:
        raise InvalidInput(f"memory id must be an int, got {memory_id!r}") from None


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInput(f"k must be an int >= 1, got {k!r}")
    return int(k)


def check_metadata(metadata: Any) -> str:
    """Validate and serialise metadata to its stored JSON text."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, dict):
        raise InvalidInput(f"metadata must be a dict, got {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidInput("metadata keys must be strings")
    try:
        # sort_keys: object equality in filters then does not depend on the caller's key order
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata must be JSON-serialisable: {exc}") from exc
    return _utf8(text, "metadata")


def canonical_time(value: Any) -> str:
    """An ISO-8601 string or datetime as ``YYYY-MM-DDTHH:MM:SS[.ffffff][+HH:MM]``; ValueError otherwise.

    Python reads more ISO forms than SQLite's date functions (``20230501T1000``,
    ``+0530``, week dates); stored and compared times are written in the one form
    both read, so a time filter never silently skips a memory.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise ValueError(f"not a time: {value!r}")
    offset = value.utcoffset()
    if offset is not None and offset.total_seconds() % 60:
        raise ValueError(f"a UTC offset with seconds cannot be compared: {value!r}")
    return value.isoformat()


def check_timestamp(timestamp: Any) -> str:
    """ISO-8601 string (conversation time) or datetime, canonicalised; None means now (UTC)."""
    if timestamp is None:
        return now_iso()
    if not isinstance(timestamp, (str, datetime)):
        raise InvalidInput(f"timestamp must be an ISO-8601 string, got {timestamp!r}")
    try:
        return canonical_time(timestamp)
    except ValueError:
        raise InvalidInput(f"timestamp is not ISO-8601: {timestamp!r}") from None


def check_label(value: Any, what: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value):
        raise InvalidInput(f"{what} must be a {'string or None' if optional else 'non-empty string'}, got {value!r}")
    return value


MAX_RECEIPT_CHARS = 200


def check_receipts(keys: Any) -> list[str]:
    """Receipt keys of one write: distinct non-empty strings of at most 200 characters."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise InvalidInput(f"receipts must be a list of strings, got {type(keys).__name__}")
    out = [check_label(k, "receipt", optional=False) for k in keys]
    for k in out:
        check_text(k, "receipt")
        if len(k) > MAX_RECEIPT_CHARS:
            raise InvalidInput(f"a receipt is at most {MAX_RECEIPT_CHARS} characters, got {len(k)}")
    if len(set(out)) != len(out):
        raise InvalidInput("receipts of one write must be distinct")
    return out


def check_vectors(vecs: Any, n: int, dim: int) -> np.ndarray:
    """(n, dim) float32 with unit rows (re-normalised: callers' rounding drifts)."""
    try:
        arr = np.asarray(vecs, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"embeddings must be numeric: {exc}") from exc
    if arr.ndim == 1 and n == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidInput(f"embeddings must be 2-D, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise EmbeddingDimensionMismatch(f"embedding width {arr.shape[1]} != store dim {dim}")
    if arr.shape[0] != n:
        raise InvalidInput(f"got {arr.shape[0]} embeddings for {n} texts")
    if not np.isfinite(arr).all():
        raise InvalidInput("embeddings contain NaN or inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInput("embeddings must not be all-zero")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def check_mode(mode: Any) -> str:
    """A search mode of :data:`memory_store.keyword.SEARCH_MODES`."""
    if mode not in SEARCH_MODES:
        raise InvalidInput(f"search mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    return mode


def check_ops(ops: Any, user_id: str) -> tuple[list[Add | Update | Delete | Noop], list[str]]:
    """Validate a batch for ``apply()``: typed ops and the texts to embed, in order.

    Raises before anything changes: ``InvalidInput`` for a malformed op, text
    or metadata, ``MemoryNotFound`` for an UPDATE/DELETE of an id the same
    batch already deleted. Ids are checked against the user by the store,
    under its write lock.
    """
    if isinstance(ops, (str, bytes, dict)):
        raise InvalidInput("apply() takes a sequence of ops")
    parsed = []
    for op in ops:
        if not isinstance(op, (Add, Update, Delete, Noop)):
            try:
                op = STORE_OP_ADAPTER.validate_python(op)
            except ValidationError as exc:
                raise InvalidInput(f"invalid store op {op!r}: {exc}") from exc
        parsed.append(op)
    deleted: set[int] = set()
    texts: list[str] = []
    for op in parsed:
        if isinstance(op, (Add, Update)):
            texts.append(check_text(op.text))
        if isinstance(op, Add):
            check_metadata(op.metadata)
        if isinstance(op, (Update, Delete)):
            if op.id in deleted:
                raise MemoryNotFound(op.id, user_id)
            if isinstance(op, Delete):
                deleted.add(op.id)
    return parsed, texts
