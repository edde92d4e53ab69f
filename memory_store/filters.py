"""Search filters: one small typed model, enforced inside the store for every search mode.

Why a model and not ad-hoc dicts: a filter that is silently dropped returns
memories the caller asked to exclude (another speaker's, another period's),
which is worse than an error. So every filter is parsed into the pydantic
models below first; an unknown operator, a misspelt field or a value of the
wrong type raises :class:`InvalidFilter` (an ``InvalidInput``) and nothing
is searched.

Two ways to write one:

* the shorthand most memory stores use, a dict::

      {"speaker": "Caroline"}                                # equality
      {"speaker": {"$in": ["Caroline", "Melanie"]}}
      {"created_at": {"$gte": "2023-05-01", "$lt": "2023-06-01"}}
      {"$or": [{"topic": "work"}, {"$not": {"topic": "health"}}]}

  Operators: ``$eq $ne $in $nin $gt $gte $lt $lte`` on a field, ``$and $or
  $not`` to combine. Several keys in one dict are ANDed.
* the models themselves: ``And(all=[Eq(field="speaker", value="Caroline"), ...])``.

Fields: ``created_at`` and ``updated_at`` are the record's own times (the
conversation time a memory was written at); their bounds are ISO-8601
strings or datetimes, compared as instants (naive = UTC, as SQLite does).
Any other field is a metadata key; equality keeps JSON types apart (``True``
is not ``1``, ``"1"`` is not ``1``), ranges compare numbers with numbers and
strings with strings.

:func:`to_sql` compiles a filter to one parameterised SQL condition over the
``memories`` table aliased ``m``; both stores evaluate exactly that SQL (the
in-memory store keeps a private SQLite mirror), so a filter means the same
thing everywhere. :func:`to_pg_sql` compiles the same (already parsed and
checked) models for PostgreSQL (:mod:`memory_store.postgres`), with the same
meaning: JSON types kept apart, missing keys never equal, strings compared
by code point, times as instants (naive = UTC).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from memory_store.errors import InvalidInput, StoreError
from memory_store.validation import canonical_time

__all__ = [
    "InvalidFilter",
    "Eq",
    "In",
    "Range",
    "And",
    "Or",
    "Not",
    "Filter",
    "TIME_FIELDS",
    "parse_filter",
    "to_sql",
    "to_pg_sql",
    "sql_errors",
    "matching_ids",
]

#: Fields that name the record's own timestamps instead of a metadata key.
TIME_FIELDS = ("created_at", "updated_at")
_MAX_DEPTH = 32  # a deeper filter is a bug or an attack, not a query
_MAX_NODES = 200  # each part is one SQL term: SQLite refuses expression trees deeper than 1000
_MAX_VALUES = 10_000  # values of one $in (bound as one JSON array, not one SQL term each)
_INT64 = (-(2**63), 2**63 - 1)  # SQLite's integer range

Scalar = Union[bool, int, float, str, None]
JSONValue = Union[Scalar, list[Any], dict[str, Any]]


class InvalidFilter(InvalidInput):
    """A search filter that cannot be understood; carries the offending part."""

    def __init__(self, message: str, part: Any = None) -> None:
        super().__init__(message)
        self.part = part


_MODEL = ConfigDict(frozen=True, extra="forbid")


def _check_field(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a filter field must be a non-empty string, got {name!r}")
    if name.startswith("$"):
        raise ValueError(f"unknown filter operator {name!r}")
    return name


FieldName = Annotated[str, AfterValidator(_check_field)]


class Eq(BaseModel):
    """``field`` equals ``value`` (JSON type included)."""

    model_config = _MODEL
    op: Literal["eq"] = "eq"
    field: FieldName
    value: JSONValue


class In(BaseModel):
    """``field`` equals one of ``values``."""

    model_config = _MODEL
    op: Literal["in"] = "in"
    field: FieldName
    values: list[JSONValue] = Field(min_length=1)


class Range(BaseModel):
    """``field`` within the given bounds (at least one); numbers, strings or times."""

    model_config = _MODEL
    op: Literal["range"] = "range"
    field: FieldName
    # Strict: True must not slip in as 1, nor "5" become 5.
    gt: StrictInt | StrictFloat | StrictStr | datetime | None = None
    gte: StrictInt | StrictFloat | StrictStr | datetime | None = None
    lt: StrictInt | StrictFloat | StrictStr | datetime | None = None
    lte: StrictInt | StrictFloat | StrictStr | datetime | None = None

    def bounds(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in ("gt", "gte", "lt", "lte") if getattr(self, name) is not None]


class And(BaseModel):
    model_config = _MODEL
    op: Literal["and"] = "and"
    all: list["Filter"] = Field(min_length=1)


class Or(BaseModel):
    model_config = _MODEL
    op: Literal["or"] = "or"
    any: list["Filter"] = Field(min_length=1)


class Not(BaseModel):
    model_config = _MODEL
    op: Literal["not"] = "not"
    filter: "Filter"


Filter = Annotated[Union[Eq, In, Range, And, Or, Not], Field(discriminator="op")]
for _m in (And, Or, Not):
    _m.model_rebuild()

_FIELD_OPS = {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte"}
_MODELS = (Eq, In, Range, And, Or, Not)


def parse_filter(value: Any) -> Filter | None:
    """A filter model from the dict shorthand (or a model, checked); None for no filter.

    Raises :class:`InvalidFilter` for anything it cannot read, before any search runs.
    """
    if value is None:
        return None
    try:
        parsed = value if isinstance(value, _MODELS) else _parse_dict(value, 0)
        _check_model(parsed, 0, [0])
    except InvalidFilter:
        raise
    except (ValidationError, ValueError, TypeError) as exc:
        raise InvalidFilter(f"invalid filter: {exc}", value) from None
    return parsed


def _parse_dict(value: Any, depth: int) -> Filter:
    if depth > _MAX_DEPTH:
        raise InvalidFilter(f"filter nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(value, dict):
        raise InvalidFilter(f"a filter must be a dict, got {type(value).__name__}", value)
    if not value:
        raise InvalidFilter("an empty filter dict matches nothing in particular; pass None for no filter", value)
    parts: list[Filter] = []
    for key, cond in value.items():
        if not isinstance(key, str):
            raise InvalidFilter(f"filter keys must be strings, got {key!r}", value)
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidFilter(f"{key} takes a non-empty list of filters", cond)
            subs = [_parse_dict(c, depth + 1) for c in cond]
            parts.append(And(all=subs) if key == "$and" else Or(any=subs))
        elif key == "$not":
            parts.append(Not(filter=_parse_dict(cond, depth + 1)))
        elif key.startswith("$"):
            raise InvalidFilter(f"unknown filter operator {key!r}; use $and, $or, $not or a field name", value)
        else:
            parts.append(_parse_field(key, cond))
    return parts[0] if len(parts) == 1 else And(all=parts)


def _parse_field(name: str, cond: Any) -> Filter:
    if not (isinstance(cond, dict) and any(isinstance(k, str) and k.startswith("$") for k in cond)):
        return Eq(field=name, value=cond)  # a plain value (a dict without operators included) is equality
    unknown = set(cond) - _FIELD_OPS  # "lt" next to "$gt" is a typo, not a value: never dropped
    if unknown:
        raise InvalidFilter(f"unknown operator(s) {sorted(map(str, unknown))} on field {name!r}; "
                            f"use {', '.join(sorted(_FIELD_OPS))}", cond)
    parts: list[Filter] = []
    bounds = {k[1:]: v for k, v in cond.items() if k in ("$gt", "$gte", "$lt", "$lte")}
    if bounds:
        parts.append(Range(field=name, **bounds))
    for op, arg in cond.items():
        if op in ("$eq", "$ne"):
            eq = Eq(field=name, value=arg)
            parts.append(eq if op == "$eq" else Not(filter=eq))
        elif op in ("$in", "$nin"):
            if not isinstance(arg, list):
                raise InvalidFilter(f"{op} on {name!r} takes a list, got {type(arg).__name__}", cond)
            inn = In(field=name, values=arg)
            parts.append(inn if op == "$in" else Not(filter=inn))
    return parts[0] if len(parts) == 1 else And(all=parts)


def _check_model(f: Any, depth: int, count: list[int]) -> None:
    """Limits and per-field value rules the pydantic types cannot express."""
    count[0] += 1
    if depth > _MAX_DEPTH or count[0] > _MAX_NODES:
        raise InvalidFilter(f"filter too large (more than {_MAX_DEPTH} levels or {_MAX_NODES} parts)")
    if isinstance(f, (And, Or)):
        for sub in (f.all if isinstance(f, And) else f.any):
            _check_model(sub, depth + 1, count)
    elif isinstance(f, Not):
        _check_model(f.filter, depth + 1, count)
    elif not isinstance(f, (Eq, In, Range)):
        raise InvalidFilter(f"not a filter: {f!r}", f)
    else:
        _check_field(f.field)  # models built with model_construct skip validation
    if isinstance(f, Range):
        if not f.bounds():
            raise InvalidFilter(f"a range on {f.field!r} needs at least one of gt, gte, lt, lte", f)
        for _, bound in f.bounds():
            _bound(f.field, bound)
    elif isinstance(f, (Eq, In)):
        values = f.values if isinstance(f, In) else [f.value]
        if len(values) > _MAX_VALUES:
            raise InvalidFilter(f"$in on {f.field!r} has more than {_MAX_VALUES} values", f)
        for v in values:
            if f.field in TIME_FIELDS:
                _time(f.field, v)
            else:
                _json_value(f.field, v)


def _json_value(field: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidFilter(f"filter value for {field!r} is not JSON: {exc}", value) from None
    if _has_big_int(value):
        raise InvalidFilter(f"filter value for {field!r} has an integer outside SQLite's 64-bit range", value)


def _has_big_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not _INT64[0] <= value <= _INT64[1]
    if isinstance(value, dict):
        return any(_has_big_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    return False


def _time(field: str, value: Any) -> str:
    """A bound on a time field as a canonical ISO string (what julianday() reads)."""
    try:
        return canonical_time(value)
    except ValueError:
        raise InvalidFilter(f"{field} compares with ISO-8601 times, got {value!r}", value) from None


def _bound(field: str, value: Any) -> Any:
    if field in TIME_FIELDS:
        return _time(field, value)
    if isinstance(value, bool) or isinstance(value, datetime):
        raise InvalidFilter(f"a range on metadata {field!r} takes numbers or strings, got {value!r}", value)
    if isinstance(value, float) and value != value:
        raise InvalidFilter(f"NaN is not a range bound (field {field!r})", value)
    if _has_big_int(value):
        raise InvalidFilter(f"range bound on {field!r} is outside SQLite's 64-bit integers", value)
    return value


_CMP = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _eq_json(value: Any) -> tuple[str, list[Any]]:
    """Condition on ``j`` (a json_each row) for JSON equality, types kept apart."""
    if value is None:
        return "j.type = 'null'", []
    if isinstance(value, bool):
        return "j.type = ?", ["true" if value else "false"]
    if isinstance(value, str):
        return "j.type = 'text' AND j.value = ?", [value]
    if isinstance(value, (int, float)):
        return "j.type IN ('integer', 'real') AND j.value = ?", [value]
    return "j.type IN ('object', 'array') AND j.value = json(?)", [_canonical_json(value)]


def _meta(key: str, cond: str, params: list[Any]) -> tuple[str, list[Any]]:
    # json_each binds the key as a parameter: no JSON-path quoting of odd keys.
    return f"EXISTS (SELECT 1 FROM json_each(m.metadata) j WHERE j.key = ? AND ({cond}))", [key, *params]


def _compile(f: Filter, leaf: Callable[[Filter], tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """And/Or/Not as SQL (the same in both dialects); ``leaf`` compiles field conditions."""
    if isinstance(f, (And, Or)):
        subs = [_compile(s, leaf) for s in (f.all if isinstance(f, And) else f.any)]
        glue = " AND " if isinstance(f, And) else " OR "
        return "(" + glue.join(s for s, _ in subs) + ")", [p for _, ps in subs for p in ps]
    if isinstance(f, Not):
        sql, params = _compile(f.filter, leaf)
        return f"(NOT {sql})", params
    return leaf(f)


def to_sql(f: Filter | None) -> tuple[str, list[Any]]:
    """One SQL condition (over ``memories m``) and its parameters; ``("1", [])`` for no filter."""
    return ("1", []) if f is None else _compile(f, _sqlite_leaf)


def _sqlite_leaf(f: Filter) -> tuple[str, list[Any]]:
    if f.field in TIME_FIELDS:
        col = f"julianday(m.{f.field})"  # field is one of TIME_FIELDS: never user text in SQL
        # coalesce: a stored time SQLite cannot read never matches (rather than NULL leaking through NOT).
        if isinstance(f, Range):
            conds = [(f"{col} {_CMP[name]} julianday(?)", _time(f.field, b)) for name, b in f.bounds()]
            return "coalesce((" + " AND ".join(c for c, _ in conds) + "), 0)", [v for _, v in conds]
        values = [_time(f.field, v) for v in (f.values if isinstance(f, In) else [f.value])]
        return (f"coalesce({col} IN (SELECT julianday(value) FROM json_each(?)), 0)",
                [json.dumps(values)])
    if isinstance(f, Range):
        parts, params = [], []
        for name, b in f.bounds():
            kind = "j.type = 'text'" if isinstance(b, str) else "j.type IN ('integer', 'real')"
            parts.append(f"{kind} AND j.value {_CMP[name]} ?")
            params.append(b)
        return _meta(f.field, " AND ".join(f"({p})" for p in parts), params)
    if isinstance(f, Eq):
        cond, params = _eq_json(f.value)
        return _meta(f.field, cond, params)
    return _meta(f.field, *_in_json(f.values))


def _in_json(values: list[Any]) -> tuple[str, list[Any]]:
    """JSON-typed membership: one bound array per kind of value, whatever the number of values."""
    parts: list[str] = []
    params: list[Any] = []
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if texts:
        parts.append("j.type = 'text' AND j.value IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(texts, ensure_ascii=False))
    if numbers:
        parts.append("j.type IN ('integer', 'real') AND j.value IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(numbers))
    for v in values:  # true/false/null and objects: few in practice, one term each
        if v is None or isinstance(v, (bool, dict, list)):
            cond, ps = _eq_json(v)
            parts.append(cond)
            params += ps
    return " OR ".join(f"({p})" for p in parts), params


@contextmanager
def sql_errors(flt: Filter | None) -> Iterator[None]:
    """A search's SQLite errors as typed ones: the filter's fault when there is one, else the store's."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if flt is not None:
            raise InvalidFilter(f"the filter cannot be evaluated: {exc}", flt) from exc
        raise StoreError(f"search failed: {exc}") from exc


def matching_ids(conn: sqlite3.Connection, user_id: str, where: str, params: list[Any]) -> list[int]:
    """Ids of the user's memories passing a compiled filter, ascending (the vector search's subset)."""
    return [r[0] for r in conn.execute(f"SELECT id FROM memories m WHERE m.user_id = ? AND {where} ORDER BY id",
                                       [user_id, *params])]


# ---- PostgreSQL -----------------------------------------------------------------------
# The same models over ``memories m`` with ``m.meta_json`` (the metadata as jsonb) and the
# times as ISO text; placeholders are psycopg's ``%s``. Every leaf is never NULL
# (coalesce/CASE), so NOT keeps the SQLite meaning (a missing key is "not equal").


def to_pg_sql(f: Filter | None) -> tuple[str, list[Any]]:
    """One PostgreSQL condition (over ``memories m``) and its parameters; ``("TRUE", [])`` for no filter."""
    return ("TRUE", []) if f is None else _compile(f, _pg_leaf)


def _pg_leaf(f: Filter) -> tuple[str, list[Any]]:
    if f.field in TIME_FIELDS:
        col = f"(m.{f.field})::timestamptz"  # field is one of TIME_FIELDS: never user text in SQL
        if isinstance(f, Range):
            conds = [(f"{col} {_CMP[name]} %s::timestamptz", _time(f.field, b)) for name, b in f.bounds()]
            return "(" + " AND ".join(c for c, _ in conds) + ")", [v for _, v in conds]
        values = [_time(f.field, v) for v in (f.values if isinstance(f, In) else [f.value])]
        return f"({col} = ANY(%s::text[]::timestamptz[]))", [values]
    if isinstance(f, Range):
        parts, params = [], []
        for name, b in f.bounds():
            if isinstance(b, str):  # strings with strings, by code point (SQLite's BINARY collation)
                parts.append(f"coalesce(jsonb_typeof(m.meta_json -> %s) = 'string'"
                             f" AND (m.meta_json ->> %s) COLLATE \"C\" {_CMP[name]} %s, FALSE)")
            else:  # numbers with numbers; CASE: the cast never sees a string
                parts.append(f"(CASE WHEN jsonb_typeof(m.meta_json -> %s) = 'number'"
                             f" THEN (m.meta_json ->> %s)::numeric {_CMP[name]} %s::numeric ELSE FALSE END)")
            params += [f.field, f.field, b]
        return "(" + " AND ".join(parts) + ")", params
    if isinstance(f, Eq):
        return "coalesce((m.meta_json -> %s) = %s::jsonb, FALSE)", [f.field, _canonical_json(f.value)]
    return ("coalesce((m.meta_json -> %s) IN (SELECT jsonb_array_elements(%s::jsonb)), FALSE)",
            [f.field, _canonical_json(f.values)])


def _canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
