"""Fact extraction: prompt shape, forgiving-but-validated parsing, batching, date resolution."""

from __future__ import annotations

from datetime import datetime

import pytest

from memory_agent.errors import InvalidModelOutput
from memory_agent.extraction import Turn, extract_facts, parse_facts, parse_session_date, resolve_dates

WHEN = datetime(2023, 5, 8, 13, 56)  # a Monday


@pytest.mark.parametrize(
    "text, expected",
    [
        ("John went on a road trip yesterday", "John went on a road trip on 7 May 2023"),
        ("Maria ran a race last Saturday", "Maria ran a race on Saturday, 6 May 2023"),
        ("Maria ran a race last Monday", "Maria ran a race on Monday, 1 May 2023"),
        ("Alice moved last month", "Alice moved in April 2023"),
        ("got a dog 3 days ago", "got a dog on 5 May 2023"),
        ("started two weeks ago", "started around 24 April 2023"),
        ("graduated last year", "graduated in 2022"),
        ("painted last week", "painted the week before 8 May 2023"),
        ("went hiking last weekend", "went hiking the weekend before 8 May 2023"),
        ("has an exam tomorrow", "has an exam on 9 May 2023"),
        ("is baking today", "is baking on 8 May 2023"),
        ("left on yesterday", "left on 7 May 2023"),
        ("moves next month", "moves in June 2023"),
        ("no dates here", "no dates here"),
    ],
)
def test_resolve_dates(text, expected):
    assert resolve_dates(text, WHEN) == expected


def test_resolve_dates_crosses_year():
    assert resolve_dates("moved last month", datetime(2023, 1, 10)) == "moved in December 2022"


def test_parse_session_date_formats():
    assert parse_session_date("1:56 pm on 8 May, 2023") == WHEN
    assert parse_session_date("2023-05-08T13:56") == WHEN
    assert parse_session_date("not a date") is None


def test_parse_facts_forgiving_and_grounded():
    src = "I moved to Berlin last month and started a job at Google. I love climbing!"
    raw = "- Alice moved to Berlin last month\n* Alice started a job at Google\n1. Alice loves climbing\n- Alice moved to Berlin last month"
    assert parse_facts(raw, speaker="Alice", source_text=src) == [
        "Alice moved to Berlin last month", "Alice started a job at Google", "Alice loves climbing"]
    # Plain sentences without bullets are accepted too.
    assert parse_facts("Alice started a job at Google.", speaker="Alice", source_text=src) == [
        "Alice started a job at Google"]


def test_none_is_explicit_no_facts():
    assert parse_facts("NONE", speaker="A", source_text="hi") == []
    assert parse_facts("none.", speaker="A", source_text="hi") == []


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "- Priya loves driving",  # the few-shot example, echoed
        "- Alice adopted three cats in Paris",  # not in the turn: invented
        "Alice: haha thanks, how are you?",  # dialogue continuation
        "- ok",
    ],
)
def test_invalid_outputs_raise(raw):
    with pytest.raises(InvalidModelOutput):
        parse_facts(raw, speaker="Alice", source_text="I moved to Berlin last month.")


def test_extract_batches_all_turns_in_one_call_and_resolves_dates(scripted):
    llm = scripted(["- Alice moved to Berlin last month", "NONE", "garbage"])
    turns = [
        Turn("Alice", "I moved to Berlin last month.", "D1:1", None, "2023-05-08T13:56"),
        Turn("Bob", "Cool!", "D1:2", None, "2023-05-08T13:56"),
        Turn("Alice", "See the photo", "D1:3", "a red bicycle", "2023-05-08T13:56"),
    ]
    out = extract_facts(llm, turns)
    assert len(llm.calls) == 1 and llm.calls[0]["n"] == 3
    assert llm.calls[0]["max_new_tokens"] <= 64
    assert [f.text for f in out.facts[0]] == ["Alice moved to Berlin in April 2023"]
    assert out.facts[0][0].dia_id == "D1:1" and out.facts[0][0].speaker == "Alice"
    assert out.facts[1] == [] and out.facts[2] == []
    assert [i for i, _ in out.invalid] == [2] and out.invalid[0][1].raw == "garbage"
    # What the model sees: short, speaker-prefixed, the caption included.
    last = llm.prompts[2][-1]["content"]
    assert last == "Alice: See the photo [shares a photo of a red bicycle]"
    assert sum(len(m["content"]) for m in llm.prompts[0]) < 1000


def test_caption_grounds_facts(scripted):
    llm = scripted(["- Alice has a red bicycle"])
    out = extract_facts(llm, [Turn("Alice", "look!", "D1:1", "a red bicycle", None)])
    assert [f.text for f in out.facts[0]] == ["Alice has a red bicycle"]
