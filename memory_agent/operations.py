"""The Memory Manager's operations as the *model* sees them, and their parser.

The model is shown a turn's related memories numbered 0..n-1 (never database
ids: small ids are easy for a small model to copy, and they cannot name
another user's rows) and answers with operations on those numbers:

* compact lines (what a 135M model can emit)::

      ADD: Alice lives in Berlin
      UPDATE 2: Alice works at Google as a data scientist
      DELETE 1
      NOOP

* or the paper's JSON: an object, a list of objects, or ``{"memory": [...]}``
  with keys ``op``/``event``/``operation``/``action`` and ``id``/``text``.

:func:`parse_operations` is forgiving about *format* (code fences, prose
around the answer, single quotes, trailing commas, lower-case op names,
``NONE`` for NOOP, ids as strings) and strict about *meaning*: ids must be in
range, ADD/UPDATE need text, one id cannot be touched twice, and anything it
cannot read raises :class:`~memory_agent.errors.InvalidModelOutput` with the
raw text. It never guesses a NOOP from garbage.

:func:`check_grounded` is the second, semantic gate (it needs the facts and
the shown memories, which the parser does not see): the text an operation
writes must come from what the model was given. The Memory Manager and the
training reward both call it, so RL optimises the same rule the product
enforces.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from memory_agent.errors import InvalidModelOutput
from memory_agent.text import GROUNDED_SHARE, content_words, grounded_share, stem

__all__ = [
    "AddOp",
    "UpdateOp",
    "DeleteOp",
    "NoopOp",
    "ManagerOp",
    "MAX_MEMORY_CHARS",
    "parse_operations",
    "check_grounded",
    "format_operations",
]

# A memory is one fact, not an essay; longer "text" is a model run-on.
MAX_MEMORY_CHARS = 400


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddOp(_Op):
    op: Literal["ADD"] = "ADD"
    text: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)


class UpdateOp(_Op):
    op: Literal["UPDATE"] = "UPDATE"
    id: int = Field(ge=0)
    text: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS)


class DeleteOp(_Op):
    op: Literal["DELETE"] = "DELETE"
    id: int = Field(ge=0)


class NoopOp(_Op):
    op: Literal["NOOP"] = "NOOP"


ManagerOp = Annotated[Union[AddOp, UpdateOp, DeleteOp, NoopOp], Field(discriminator="op")]
_ADAPTER: TypeAdapter = TypeAdapter(ManagerOp)

_OP_ALIASES = {
    "ADD": "ADD",
    "INSERT": "ADD",
    "CREATE": "ADD",
    "UPDATE": "UPDATE",
    "MODIFY": "UPDATE",
    "EDIT": "UPDATE",
    "DELETE": "DELETE",
    "REMOVE": "DELETE",
    "NOOP": "NOOP",
    "NONE": "NOOP",
    "NO-OP": "NOOP",
    "NO_OP": "NOOP",
    "NOTHING": "NOOP",
}
_OP_KEYS = ("op", "event", "operation", "action", "type")
_ID_KEYS = ("id", "memory_id", "index", "idx")
_TEXT_KEYS = ("text", "memory", "content", "fact", "new_text", "value")
_IGNORED_KEYS = {"old_memory", "old_text", "reason", "explanation"}

# One compact line: optional bullet/number, op word, optional id, optional ":" text.
_LINE = re.compile(
    r"""^\s*(?:[-*•]\s*|\d+[.)]\s+)?          # bullet or list number
        (?P<op>add|update|delete|remove|noop|none|no-op|no_op)\b
        \s*(?:\[?\s*(?:id\s*[=:]?\s*)?(?P<id>-?\d{1,9})(?!\d)\s*\]?)?   # id: 2, [2], id=2
        \s*(?::\s*|-\s+|\s+)?(?P<text>.*)$""",  # text greedy, stripped by the caller: a lazy
                                                # text before \s*$ is quadratic on long blank runs
    re.IGNORECASE | re.VERBOSE,
)


def parse_operations(raw: str, n_shown: int) -> list[AddOp | UpdateOp | DeleteOp | NoopOp]:
    """Parse a manager completion into validated operations on ids ``0..n_shown-1``.

    Returns ``[NoopOp()]`` for an explicit no-op. Raises ``InvalidModelOutput``
    for anything unreadable or invalid; the caller skips the whole turn.
    """
    if raw is None or not raw.strip():
        raise InvalidModelOutput("empty manager output", raw or "")
    text = _strip_fences(raw.strip())
    data = _extract_json(text)
    if data is not None:
        items = _json_items(data, raw)
        ops = [_normalise_item(item, raw) for item in items]
    else:
        ops = _parse_lines(text, raw)
    return _validate(ops, n_shown, raw)


_WORD = re.compile(r"[a-z0-9]+")
_content, _stem = content_words, stem


def _degenerate(text: str) -> bool:
    """A generation loop: some 4-word sequence occurs twice (one fact never needs that)."""
    words = _WORD.findall(text.casefold())
    grams: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 3):
        key = tuple(words[i : i + 4])
        grams[key] = grams.get(key, 0) + 1
        if grams[key] >= 2:
            return True
    return False


def check_grounded(ops: list, facts: list[str] | tuple[str, ...], shown: list[str], raw: str) -> None:
    """Reject operations whose text did not come from the turn (raises ``InvalidModelOutput``).

    A manager only files what it was told. Small models, unchecked, loop
    ("Maria loves a banana. She loves a banana. ...") and "UPDATE" a memory
    with unrelated invented text, destroying a stored fact. So:

    * no more ADDs than new facts (one fact reworded many times is a flood);
    * no ADD/UPDATE text may be a generation loop;
    * at least half of an ADD's content words must occur in the new facts,
      and of an UPDATE's in the new facts or the memory it replaces (a merge
      may reword both, not invent);
    * an UPDATE must share a content word with the memory it replaces
      ("Alice moved to Berlin" -> "Alice lives in Munich" shares the name
      and passes; an overwrite of another person's or topic's memory fails).

    ``shown`` are the shown memories' texts in prompt order (small id = index).
    """
    fact_words = {_stem(w) for f in facts for w in _content(f)}
    adds = sum(isinstance(op, AddOp) for op in ops)
    if adds > max(len(facts), 1):
        # Each new fact is at most one new memory; more is a loop or a flood (one fact
        # reworded into hundreds of grounded ADDs would otherwise all land).
        raise InvalidModelOutput(f"{adds} ADDs for {len(facts)} new fact(s)", raw)
    for op in ops:
        if not isinstance(op, (AddOp, UpdateOp)):
            continue
        if _degenerate(op.text):
            raise InvalidModelOutput(f"{op.op} text repeats itself (a generation loop): {op.text[:80]!r}", raw)
        words = [_stem(w) for w in _content(op.text)]
        sources = set(fact_words)
        if isinstance(op, UpdateOp):
            old = {_stem(w) for w in _content(shown[op.id])}
            if not old & set(words):
                raise InvalidModelOutput(
                    f"UPDATE {op.id} replaces {shown[op.id]!r} with unrelated text {op.text!r}", raw
                )
            sources |= old
        share = grounded_share(words, sources)
        if share is not None and share < GROUNDED_SHARE:
            raise InvalidModelOutput(f"{op.op} text is not from the given facts or memory: {op.text!r}", raw)


def format_operations(ops: list[AddOp | UpdateOp | DeleteOp | NoopOp]) -> str:
    """The compact line format of ``ops`` (used for few-shot examples and training targets)."""
    lines = []
    for op in ops:
        if isinstance(op, AddOp):
            lines.append(f"ADD: {op.text}")
        elif isinstance(op, UpdateOp):
            lines.append(f"UPDATE {op.id}: {op.text}")
        elif isinstance(op, DeleteOp):
            lines.append(f"DELETE {op.id}")
        else:
            lines.append("NOOP")
    return "\n".join(lines)


# ------------------------------------------------------------------ internals
def _strip_fences(text: str) -> str:
    m = re.search(r"```(?:json|JSON)?\s*(.*?)```", text, re.DOTALL)
    if m:
        return m.group(1).strip()
    return text.strip("` \n")


def _extract_json(text: str) -> Any | None:
    """The first JSON-ish object/list in ``text`` (None when there is no bracket)."""
    starts = [i for i in (text.find("{"), text.find("[")) if i != -1]
    if not starts:
        return None
    start = min(starts)
    closer = "}" if text[start] == "{" else "]"
    end = text.rfind(closer)
    if end <= start:
        return None
    candidate = text[start : end + 1]
    # Leading "[2]" in "UPDATE [2]: ..." is the compact format, not JSON; so is any output whose
    # first line is an operation line: JSON inside it ("ADD: {"op": "DELETE", "id": 0}", a user's
    # words echoed) is memory text, never operations.
    if re.fullmatch(r"\[\s*-?\d+\s*\]", candidate) or _LINE.match(text.splitlines()[0] if text else ""):
        return None
    for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
        try:
            return json.loads(attempt)
        except (ValueError, RecursionError):  # bad JSON, a 5,000-digit number, nesting past the stack
            pass
    # Single quotes / Python literals: literal_eval is safe (no code runs).
    pythonish = re.sub(r",\s*([}\]])", r"\1", candidate)
    pythonish = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", pythonish)))
    try:
        return ast.literal_eval(pythonish)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
        return None


def _json_items(data: Any, raw: str) -> list[Any]:
    if isinstance(data, dict):
        for key in ("memory", "operations", "ops", "actions", "events"):
            if isinstance(data.get(key), list):
                return data[key]
        return [data]
    if isinstance(data, list):
        return data
    raise InvalidModelOutput(f"expected a JSON object or list of operations, got {type(data).__name__}", raw)


def _normalise_item(item: Any, raw: str) -> dict[str, Any]:
    if isinstance(item, str):  # ["NOOP"] or ["ADD: x"]
        return _parse_lines(item, raw)[0]
    if not isinstance(item, dict):
        raise InvalidModelOutput(f"operation must be an object, got {item!r}", raw)
    lowered = {str(k).strip().lower(): v for k, v in item.items()}
    op_key = next((k for k in _OP_KEYS if k in lowered), None)
    if op_key is None:
        raise InvalidModelOutput(f"operation without an op/event field: {item!r}", raw)
    op = _canonical_op(lowered[op_key], raw)
    out: dict[str, Any] = {"op": op}
    id_key = next((k for k in _ID_KEYS if k in lowered), None)
    text_key = next((k for k in _TEXT_KEYS if k in lowered), None)
    known = {op_key, id_key, text_key} | _IGNORED_KEYS
    unknown = [k for k in lowered if k not in known]
    if unknown:
        raise InvalidModelOutput(f"unknown field(s) {unknown} in operation {item!r}", raw)
    if op in ("UPDATE", "DELETE"):
        if id_key is None:
            raise InvalidModelOutput(f"{op} without an id: {item!r}", raw)
        out["id"] = _coerce_id(lowered[id_key], raw)
    if op in ("ADD", "UPDATE"):
        value = lowered.get(text_key) if text_key else None
        if not isinstance(value, str):
            raise InvalidModelOutput(f"{op} needs a text string, got {value!r}", raw)
        out["text"] = value.strip()
    # ids on ADD (the paper's format numbers new rows) and on NOOP carry no meaning.
    return out


def _canonical_op(value: Any, raw: str) -> str:
    if not isinstance(value, str) or value.strip().upper() not in _OP_ALIASES:
        raise InvalidModelOutput(f"unknown operation {value!r}", raw)
    return _OP_ALIASES[value.strip().upper()]


def _coerce_id(value: Any, raw: str) -> int:
    if isinstance(value, bool):
        raise InvalidModelOutput(f"id must be an integer, got {value!r}", raw)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\[?\s*-?\d{1,9}\s*\]?\s*", value):
        return int(value.strip(" []"))
    raise InvalidModelOutput(f"id must be an integer, got {value!r}", raw)


def _parse_lines(text: str, raw: str) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            continue  # prose around the operations is tolerated, never interpreted
        op = _OP_ALIASES[m.group("op").upper()]
        item: dict[str, Any] = {"op": op}
        body = (m.group("text") or "").strip().strip('"').strip()
        if op in ("UPDATE", "DELETE"):
            if m.group("id") is None:
                raise InvalidModelOutput(f"{op} without an id in line {line.strip()!r}", raw)
            item["id"] = int(m.group("id"))
        elif op == "ADD" and m.group("id") is not None and not body:
            # "ADD 3" with no text: a number is not a memory.
            raise InvalidModelOutput(f"ADD without text in line {line.strip()!r}", raw)
        elif op == "ADD" and m.group("id") is not None:
            body = f"{m.group('id')} {body}" if not line.split(m.group("id"), 1)[1].lstrip().startswith(":") else body
        if op in ("ADD", "UPDATE"):
            item["text"] = body
        ops.append(item)
    if not ops:
        raise InvalidModelOutput("no operation found (expected ADD/UPDATE/DELETE/NOOP lines or JSON)", raw)
    return ops


def _validate(items: list[dict[str, Any]], n_shown: int, raw: str) -> list:
    ops = []
    for item in items:
        if item.get("op") in ("ADD", "UPDATE") and not str(item.get("text", "")).strip():
            raise InvalidModelOutput(f"{item['op']} needs non-empty text", raw)
        if "text" in item and isinstance(item["text"], str) and len(item["text"]) > MAX_MEMORY_CHARS:
            raise InvalidModelOutput(f"memory text longer than {MAX_MEMORY_CHARS} characters", raw)
        if "id" in item and not (0 <= item["id"] < n_shown):
            shown = f"0..{n_shown - 1}" if n_shown else "none (no memories were shown)"
            raise InvalidModelOutput(f"{item['op']} names memory {item['id']}, but the shown ids are {shown}", raw)
        try:
            ops.append(_ADAPTER.validate_python(item))
        except ValidationError as exc:
            raise InvalidModelOutput(f"invalid operation {item!r}: {exc.errors()[0]['msg']}", raw) from exc
    touched: dict[int, str] = {}
    for op in ops:
        if isinstance(op, (UpdateOp, DeleteOp)):
            if op.id in touched:
                raise InvalidModelOutput(
                    f"memory {op.id} is both {touched[op.id].lower()}d and {op.op.lower()}d in one turn", raw
                )
            touched[op.id] = op.op
    real = [op for op in ops if not isinstance(op, NoopOp)]
    if not real:
        return [NoopOp()]
    # Identical ADDs are one memory, not two.
    seen: set[str] = set()
    out = []
    for op in real:
        if isinstance(op, AddOp):
            key = op.text.casefold()
            if key in seen:
                continue
            seen.add(key)
        out.append(op)
    return out
