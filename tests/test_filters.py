"""Search filters: every operator, typed refusals, the same answers in every mode and store."""

from __future__ import annotations

from datetime import datetime

import pytest

from memory_store import And, Eq, In, InvalidFilter, InvalidInput, Not, Or, Range, parse_filter
from memory_store.filters import to_sql

ROWS = [  # (text, metadata, timestamp)
    ("alpha note", {"speaker": "Ann", "n": 1, "flag": True, "tags": ["a"]}, "2023-01-10T09:00:00"),
    ("alpha note", {"speaker": "Bob", "n": 2, "flag": False}, "2023-03-05T09:00:00"),
    ("alpha note", {"speaker": "Ann", "n": 3.5, "flag": 1}, "2023-05-08T13:56:00"),
    ("alpha note", {"speaker": "Cy", "n": "3", "topic": None}, "2023-07-01T00:00:00+02:00"),
    ("alpha note", {"n": 10}, "2024-02-29T12:00:00"),
]


@pytest.fixture
def filled(make_backend, embedder):
    s = make_backend(embedder)
    ids = s.add_many([t for t, _, _ in ROWS], "u1", metadatas=[m for _, m, _ in ROWS], timestamps=[t for _, _, t in ROWS])
    s.add_many(["alpha note"] * 3, "u2", metadatas=[{"speaker": "Ann", "n": 1}] * 3)  # never in u1's results
    return s, ids


CASES = [
    ({"speaker": "Ann"}, [0, 2]),
    ({"speaker": {"$eq": "Ann"}}, [0, 2]),
    ({"speaker": {"$ne": "Ann"}}, [1, 3, 4]),                # missing key counts as "not equal"
    ({"speaker": {"$in": ["Bob", "Cy"]}}, [1, 3]),
    ({"speaker": {"$nin": ["Bob", "Cy"]}}, [0, 2, 4]),
    ({"n": 1}, [0]),
    ({"n": "3"}, [3]),                                       # JSON types are kept apart
    ({"flag": True}, [0]),                                   # True is not 1
    ({"flag": 1}, [2]),
    ({"topic": None}, [3]),
    ({"tags": ["a"]}, [0]),
    ({"n": {"$gt": 1, "$lte": 3.5}}, [1, 2]),               # numbers compare with numbers only ("3" is text)
    ({"n": {"$gte": 10}}, [4]),
    ({"n": {"$lt": "4"}}, [3]),                              # strings compare with strings
    ({"created_at": {"$gte": "2023-03-01", "$lt": "2023-06-01"}}, [1, 2]),
    ({"created_at": {"$lt": datetime(2023, 1, 11)}}, [0]),
    ({"created_at": {"$gt": "2023-06-30T23:00:00"}}, [4]),  # 2023-07-01T00:00+02:00 is 22:00 UTC on 30 June
    ({"created_at": "2023-05-08T13:56:00"}, [2]),
    ({"updated_at": {"$gte": "2024-01-01"}}, [4]),
    ({"$or": [{"speaker": "Bob"}, {"n": 10}]}, [1, 4]),
    ({"$and": [{"speaker": "Ann"}, {"n": {"$gt": 2}}]}, [2]),
    ({"$not": {"speaker": "Ann"}}, [1, 3, 4]),
    ({"speaker": "Ann", "flag": True}, [0]),                 # several keys: AND
    ({"$or": [{"$not": {"n": {"$gte": 2}}}, {"speaker": "Cy"}]}, [0, 3]),
    ({"speaker": "Zed"}, []),
]


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
@pytest.mark.parametrize(("flt", "expected"), CASES)
def test_filter_operators_in_every_mode(filled, mode, flt, expected):
    s, ids = filled
    got = s.search("alpha note", "u1", k=20, mode=mode, filters=flt)
    assert sorted(h.id for h in got) == [ids[i] for i in expected]


def test_search_vector_and_models_agree_with_the_shorthand(filled, embedder):
    s, ids = filled
    model = And(all=[Eq(field="speaker", value="Ann"), Not(filter=Range(field="n", gt=2))])
    vec = embedder.embed(["alpha note"])[0]
    assert [h.id for h in s.search_vector(vec, "u1", k=9, filters=model)] == [ids[0]]
    assert parse_filter({"speaker": "Ann", "$not": {"n": {"$gt": 2}}}) == model


def test_filter_is_enforced_before_the_limit(make_backend, embedder):
    s = make_backend(embedder)
    s.add_many([f"common words here {i}" for i in range(200)], "u1",
               metadatas=[{"keep": i % 50 == 0} for i in range(200)])
    for mode in ("vector", "keyword", "hybrid"):
        got = s.search("common words", "u1", k=4, mode=mode, filters={"keep": True})
        assert len(got) == 4 and all(h.metadata["keep"] is True for h in got)


BAD = [
    {"speaker": {"$regex": "A.*"}},            # unknown operator: refused, not dropped
    {"$nor": [{"a": 1}]},
    {"$and": {"a": 1}},
    {"$or": []},
    {"speaker": {"$in": "Ann"}},
    {"n": {"$gt": True}},
    {"created_at": {"$gte": "last tuesday"}},
    {"created_at": {"$gt": 5}},
    {"created_at": "yesterday"},
    {1: "x"},
    {},
    ["speaker"],
    "speaker = 'Ann'",
    {"n": {"$gt": float("nan")}},
    {"$not": "x"},
]


@pytest.mark.parametrize("bad", BAD)
def test_bad_filters_are_typed_errors_and_change_nothing(backend, bad):
    backend.add("alpha", "u1", {"speaker": "Ann"})
    for mode in ("vector", "keyword", "hybrid"):
        with pytest.raises(InvalidFilter) as info:
            backend.search("alpha", "u1", mode=mode, filters=bad)
        assert isinstance(info.value, InvalidInput)
    assert backend.count("u1") == 1


def test_deep_or_huge_filters_are_refused():
    deep: dict = {"a": 1}
    for _ in range(40):
        deep = {"$not": deep}
    with pytest.raises(InvalidFilter):
        parse_filter(deep)
    with pytest.raises(InvalidFilter):
        parse_filter({"$or": [{"a": i} for i in range(2000)]})


def test_models_with_unknown_fields_are_refused():
    with pytest.raises(InvalidFilter):
        parse_filter(Eq.model_construct(op="eq", field="$where", value=1))
    with pytest.raises(Exception):
        Eq(field="a", value=1, extra=2)
    with pytest.raises(Exception):
        Range(field="$gt", gt=1)


def test_sql_is_parameterised():
    sql, params = to_sql(parse_filter({"a'); DROP TABLE memories; --": {"$in": ["x' OR 1=1"]}}))
    assert "DROP" not in sql and "x'" not in sql and params[0].startswith("a')")


def test_in_models_round_trip():
    f = parse_filter({"speaker": {"$in": ["Ann", "Bob"]}, "created_at": {"$gte": "2023-01-01"}})
    assert isinstance(f, And) and [type(p) for p in f.all] == [In, Range]
    assert parse_filter(f) is f
    assert parse_filter(None) is None
    assert isinstance(parse_filter({"$or": [{"a": 1}, {"b": 2}]}), Or)


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_large_in_lists_and_long_ors_are_fine_or_typed(backend, mode):
    backend.add_many([f"alpha {i}" for i in range(10)], "u1", metadatas=[{"n": i, "s": str(i)} for i in range(10)])
    got = backend.search("alpha", "u1", k=20, mode=mode, filters={"n": {"$in": list(range(5000))}})
    assert len(got) == 10
    got = backend.search("alpha", "u1", k=20, mode=mode, filters={"s": {"$nin": [str(i) for i in range(3, 3000)]}})
    assert sorted(h.metadata["n"] for h in got) == [0, 1, 2]
    assert len(backend.search("alpha", "u1", k=20, mode=mode, filters={"$or": [{"n": i} for i in range(150)]})) == 10
    with pytest.raises(InvalidFilter):
        backend.search("alpha", "u1", mode=mode, filters={"$or": [{"n": i} for i in range(400)]})
    times = [f"2023-01-{d:02d}T00:00:00" for d in range(1, 29)]
    assert backend.search("alpha", "u1", mode=mode, filters={"created_at": {"$in": times}}) == []


@pytest.mark.parametrize("bad", [{"n": 2**64}, {"n": {"$gt": 2**64}}, {"n": {"$in": [2**63]}}, {"n": [1, -(2**70)]},
                                 {"n": {"$gt": 4, "lt": 10}}, {"n": {"$gte": 1, "$foo": 2}}])
def test_out_of_range_ints_and_typo_operators_are_refused(backend, bad):
    backend.add("alpha", "u1", {"n": 5})
    with pytest.raises(InvalidFilter):
        backend.search("alpha", "u1", filters=bad)


def test_object_equality_ignores_key_order(backend):
    a = backend.add("alpha", "u1", {"obj": {"y": 2, "x": 1}})
    assert [h.id for h in backend.search("alpha", "u1", filters={"obj": {"x": 1, "y": 2}})] == [a]


def test_time_filters_see_every_accepted_timestamp_form(backend):
    forms = ["20230501T100000", "2023-05-01T10:00:00+0530", "2023-05-01", "2023-05-01T10:00:00Z"]
    ids = backend.add_many(["alpha"] * len(forms), "u1", timestamps=forms)
    got = backend.search("alpha", "u1", k=9, filters={"created_at": {"$gte": "2023-04-30", "$lt": "2023-05-02"}})
    assert sorted(h.id for h in got) == sorted(ids)
    assert backend.search("alpha", "u1", k=9, filters={"$not": {"created_at": {"$gte": "2023-04-30"}}}) == []
    with pytest.raises(InvalidInput):
        backend.add("alpha", "u1", timestamp="2023-05-01T10:00:00+05:30:15")
    with pytest.raises(InvalidFilter):
        backend.search("alpha", "u1", filters={"created_at": {"$gte": "2023-05-01T10:00:00+05:30:15"}})


def test_huge_k_is_not_an_overflow(backend):
    backend.add("alpha", "u1")
    for mode in ("vector", "keyword", "hybrid"):
        assert len(backend.search("alpha", "u1", k=2**62, mode=mode)) == 1
