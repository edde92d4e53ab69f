"""parse_operations: forgiving about format, strict about meaning."""

from __future__ import annotations

import pytest

from memory_agent.errors import InvalidModelOutput
from memory_agent.operations import AddOp, DeleteOp, NoopOp, UpdateOp, format_operations, parse_operations


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ADD: Alice lives in Berlin", [AddOp(text="Alice lives in Berlin")]),
        ("UPDATE 2: Alice works at X\nDELETE 1", [UpdateOp(id=2, text="Alice works at X"), DeleteOp(id=1)]),
        ("- update [0]: merged\n1. delete id=1", [UpdateOp(id=0, text="merged"), DeleteOp(id=1)]),
        ("NOOP", [NoopOp()]),
        ("None.", [NoopOp()]),
        ("NONE\nNOOP", [NoopOp()]),
        ("Here you go:\nADD: a fact\nThat's all!", [AddOp(text="a fact")]),
        ('{"op": "ADD", "text": "x y"}', [AddOp(text="x y")]),
        ('```json\n[{"event": "add", "text": "x y"},]\n```', [AddOp(text="x y")]),
        ("Sure! {'operation': 'UPDATE', 'id': '1', 'text': 'abc'} hope this helps", [UpdateOp(id=1, text="abc")]),
        ('{"memory": [{"id": "0", "text": "a", "event": "NONE"}, {"id": "3", "text": "new", "event": "ADD"}]}',
         [AddOp(text="new")]),
        ('[{"event": "DELETE", "id": 2.0}]', [DeleteOp(id=2)]),
        ('[{"event": "UPDATE", "id": 1, "text": "t", "old_memory": "o"}]', [UpdateOp(id=1, text="t")]),
        ("[]", [NoopOp()]),
        ("ADD: same\nADD: Same", [AddOp(text="same")]),
        ("NOOP\nADD: real", [AddOp(text="real")]),
    ],
)
def test_accepts_formats(raw, expected):
    assert parse_operations(raw, 3) == expected


@pytest.mark.parametrize(
    "raw, match",
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("I think the memories look fine overall", "no operation"),
        ("UPDATE 5: x", "shown ids are 0..2"),
        ("DELETE 3", "shown ids"),
        ("DELETE -1", "shown ids"),
        ("DELETE 1\nUPDATE 1: x", "both deleted and updated"),
        ("UPDATE 0: a\nUPDATE 0: b", "both updated and updated"),
        ("ADD:", "non-empty text"),
        ("UPDATE 1:", "non-empty text"),
        ("UPDATE: no id", "without an id"),
        ('{"op": "UPDATE", "id": [1], "text": "a"}', "integer"),
        ('{"op": "UPDATE", "id": true, "text": "a"}', "integer"),
        ('{"op": "ADD", "text": ["a"]}', "text string"),
        ('{"op": "FROB"}', "unknown operation"),
        ('{"text": "no op"}', "without an op"),
        ('{"op": "ADD", "text": "a", "danger": 1}', "unknown field"),
        ('{"op": "DELETE"}', "without an id"),
        ('"just a string"', None),
        ("ADD: " + "x" * 500, "longer than"),
    ],
)
def test_rejects_with_raw_attached(raw, match):
    with pytest.raises(InvalidModelOutput) as info:
        parse_operations(raw, 3)
    assert info.value.raw == raw
    if match:
        assert match in str(info.value)


def test_no_memories_shown_means_no_ids_valid():
    with pytest.raises(InvalidModelOutput, match="no memories were shown"):
        parse_operations("UPDATE 0: x", 0)
    assert parse_operations("ADD: x y", 0) == [AddOp(text="x y")]


def test_format_roundtrip():
    ops = [AddOp(text="a b"), UpdateOp(id=1, text="c"), DeleteOp(id=0)]
    assert parse_operations(format_operations(ops), 2) == ops
    assert format_operations([NoopOp()]) == "NOOP"


def test_models_are_strict():
    with pytest.raises(ValueError):
        AddOp(text="x", extra=1)
    with pytest.raises(ValueError):
        UpdateOp(id=-1, text="x")


FACTS = ["Maria adopted a puppy named Coco", "Maria moved to Denver"]
SHOWN = ["Maria lives in Boston", "John likes jazz"]


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("ADD: Maria adopted a puppy named Coco", True),
        ("UPDATE 0: Maria lives in Denver", True),  # merge: words from the fact and the old memory
        ("ADD: Maria adopted a puppy called Coco", True),  # one invented word of four is fine
        ("NOOP", True),
        ("DELETE 1", True),
        ("ADD: Maria loves a banana", False),  # invented
        ("UPDATE 0: Maria loves making pizza with her family", False),  # shares only the name
        ("UPDATE 1: Maria moved to Denver", False),  # overwrites another topic's memory
        ("ADD: Maria moved to Denver. She moved to Denver. She moved to Denver.", False),  # loop
    ],
)
def test_check_grounded_table(raw, ok):
    from memory_agent.operations import check_grounded

    ops = parse_operations(raw, len(SHOWN))
    if ok:
        check_grounded(ops, FACTS, SHOWN, raw)
    else:
        with pytest.raises(InvalidModelOutput) as info:
            check_grounded(ops, FACTS, SHOWN, raw)
        assert info.value.raw == raw
