"""time_range: the time a question names, for the Answer Agent's ranking boost."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from memory_agent.timeexpr import TimeRange, time_range

NOW = datetime(2023, 8, 15, 10, 30)  # the newest memory's date: mid-August 2023


def D(*parts: int) -> datetime:
    return datetime(*parts)


# (question, start, end, text) with now = NOW
CASES = [
    # a year alone
    ("What did Caroline do in 2022?", D(2022, 1, 1), D(2023, 1, 1), "2022"),
    ("during 1999", D(1999, 1, 1), D(2000, 1, 1), "1999"),
    ("2022", D(2022, 1, 1), D(2023, 1, 1), "2022"),
    ("Where did they march in 2023?", D(2023, 1, 1), D(2024, 1, 1), "2023"),
    # month + year
    ("What happened in May 2023?", D(2023, 5, 1), D(2023, 6, 1), "May 2023"),
    ("May, 2023", D(2023, 5, 1), D(2023, 6, 1), "May, 2023"),
    ("in May of 2023", D(2023, 5, 1), D(2023, 6, 1), "May of 2023"),
    ("Sept 2022", D(2022, 9, 1), D(2022, 10, 1), "Sept 2022"),
    ("sept. 2022", D(2022, 9, 1), D(2022, 10, 1), "sept. 2022"),
    ("DECEMBER 2020", D(2020, 12, 1), D(2021, 1, 1), "DECEMBER 2020"),
    ("by 2023-05", D(2023, 5, 1), D(2023, 6, 1), "2023-05"),
    # day + month + year
    ("on 8 May 2023", D(2023, 5, 8), D(2023, 5, 9), "8 May 2023"),
    ("on 8 May, 2023", D(2023, 5, 8), D(2023, 5, 9), "8 May, 2023"),
    ("on May 8, 2023", D(2023, 5, 8), D(2023, 5, 9), "May 8, 2023"),
    ("on May 8 2023", D(2023, 5, 8), D(2023, 5, 9), "May 8 2023"),
    ("on 8th May 2023", D(2023, 5, 8), D(2023, 5, 9), "8th May 2023"),
    ("on the 8th of May 2023", D(2023, 5, 8), D(2023, 5, 9), "8th of May 2023"),
    ("on Feb 29, 2024", D(2024, 2, 29), D(2024, 3, 1), "Feb 29, 2024"),
    ("on 2023-05-08", D(2023, 5, 8), D(2023, 5, 9), "2023-05-08"),
    ("at 2023-05-08T13:56:00", D(2023, 5, 8), D(2023, 5, 9), "2023-05-08"),
    # a bare month, made a time by the word before it
    ("What did she paint in May?", D(2023, 5, 1), D(2023, 6, 1), "in May"),
    ("in August", D(2023, 8, 1), D(2023, 9, 1), "in August"),
    ("in September", D(2022, 9, 1), D(2022, 10, 1), "in September"),
    ("last May", D(2023, 5, 1), D(2023, 6, 1), "last May"),
    ("last August", D(2022, 8, 1), D(2022, 9, 1), "last August"),
    ("this December", D(2023, 12, 1), D(2024, 1, 1), "this December"),
    ("in early March", D(2023, 3, 1), D(2023, 4, 1), "early March"),
    ("during jan", D(2023, 1, 1), D(2023, 2, 1), "during jan"),
    # before / after / since
    ("before June 2023", None, D(2023, 6, 1), "before June 2023"),
    ("after 2021", D(2022, 1, 1), None, "after 2021"),
    ("since 2021", D(2021, 1, 1), None, "since 2021"),
    ("since last year", D(2022, 1, 1), None, "since last year"),
    ("before May", None, D(2023, 5, 1), "before May"),
    ("after last May", D(2023, 6, 1), None, "after last May"),
    ("Before 8 May, 2023", None, D(2023, 5, 8), "Before 8 May, 2023"),
    # relative to now
    ("last year", D(2022, 1, 1), D(2023, 1, 1), "last year"),
    ("this year", D(2023, 1, 1), D(2024, 1, 1), "this year"),
    ("last month", D(2023, 7, 1), D(2023, 8, 1), "last month"),
    ("this month", D(2023, 8, 1), D(2023, 9, 1), "this month"),
    ("last week", D(2023, 8, 8), D(2023, 8, 15), "last week"),
    ("yesterday", D(2023, 8, 14), D(2023, 8, 15), "yesterday"),
    ("What did I eat today?", D(2023, 8, 15), D(2023, 8, 16), "today"),
    ("two weeks ago", D(2023, 7, 29), D(2023, 8, 5), "two weeks ago"),
    ("a week ago", D(2023, 8, 5), D(2023, 8, 12), "a week ago"),
    ("3 days ago", D(2023, 8, 11), D(2023, 8, 14), "3 days ago"),
    ("a few days ago", D(2023, 8, 11), D(2023, 8, 14), "a few days ago"),
    ("a month ago", D(2023, 7, 1), D(2023, 8, 1), "a month ago"),
    ("twelve months ago", D(2022, 8, 1), D(2022, 9, 1), "twelve months ago"),
    ("two years ago", D(2021, 1, 1), D(2022, 1, 1), "two years ago"),
    ("a couple of days ago", D(2023, 8, 12), D(2023, 8, 15), "a couple of days ago"),
    # leftmost wins
    ("in 2021 or in 2022?", D(2021, 1, 1), D(2022, 1, 1), "2021"),
    ("last year, not in 2020", D(2022, 1, 1), D(2023, 1, 1), "last year"),
]


@pytest.mark.parametrize("question,start,end,text", CASES)
def test_time_range(question, start, end, text):
    assert time_range(question, NOW) == TimeRange(start, end, text)


NONE_CASES = [
    "What is her favourite colour?",
    "",
    "What may she do next?",
    "May I ask what she likes?",
    "Who is the mayor?",
    "a2022b",
    "the number 12022",
    "20222 items",
    "It cost $2022",
    "pi is 2022.5",
    "31 February 2023",
    "2023-02-30",
    "9999 years ago",
]


@pytest.mark.parametrize("question", NONE_CASES)
def test_no_time(question):
    assert time_range(question, NOW) is None


@pytest.mark.parametrize("question", ["last year", "in May", "last May", "two weeks ago", "yesterday", "last week"])
def test_relative_needs_now(question):
    assert time_range(question) is None
    assert time_range(question, "not a date") is None


@pytest.mark.parametrize("question,start,end", [
    ("in 2022", D(2022, 1, 1), D(2023, 1, 1)),
    ("on 8 May, 2023", D(2023, 5, 8), D(2023, 5, 9)),
    ("last year or in 2021", D(2021, 1, 1), D(2022, 1, 1)),  # the unresolvable one is passed over
])
def test_absolute_without_now(question, start, end):
    r = time_range(question)
    assert r is not None and (r.start, r.end) == (start, end)


@pytest.mark.parametrize("now,question,start,end", [
    ("2023-08-15T10:30:00", "yesterday", D(2023, 8, 14), D(2023, 8, 15)),
    ("2023-08-15T23:30:00-05:00", "today", D(2023, 8, 16), D(2023, 8, 17)),  # aware -> UTC
    (datetime(2023, 8, 15, 23, 30, tzinfo=timezone.utc), "today", D(2023, 8, 15), D(2023, 8, 16)),
    (D(2023, 1, 10), "last month", D(2022, 12, 1), D(2023, 1, 1)),
    (D(2023, 5, 20), "last May", D(2022, 5, 1), D(2022, 6, 1)),
    (D(2023, 5, 20), "in May", D(2023, 5, 1), D(2023, 6, 1)),
])
def test_now_forms(now, question, start, end):
    r = time_range(question, now)
    assert r is not None and (r.start, r.end) == (start, end)


@pytest.mark.parametrize("question,expected", [
    ("in May 2023", {"created_at": {"$gte": "2023-05-01T00:00:00", "$lt": "2023-06-01T00:00:00"}}),
    ("before 2023", {"created_at": {"$lt": "2023-01-01T00:00:00"}}),
    ("after 2022", {"created_at": {"$gte": "2023-01-01T00:00:00"}}),
])
def test_as_filter(question, expected):
    assert time_range(question, NOW).as_filter() == expected


def test_as_filter_field():
    assert time_range("2022").as_filter("ts") == {
        "ts": {"$gte": "2022-01-01T00:00:00", "$lt": "2023-01-01T00:00:00"}}


MAY = TimeRange(D(2023, 5, 1), D(2023, 6, 1), "May 2023")


@pytest.mark.parametrize("span,when,inside", [
    (MAY, "2023-05-08T13:56:00", True),
    (MAY, D(2023, 5, 1), True),  # start inclusive
    (MAY, "2023-06-01T00:00:00", False),  # end exclusive
    (MAY, "2023-04-30T23:59:59", False),
    (MAY, "2023-05-31T23:30:00-02:00", False),  # aware: 2023-06-01T01:30 UTC
    (MAY, "2023-05-08", True),
    (MAY, "garbage", False),
    (TimeRange(None, D(2023, 6, 1), "before June 2023"), "1990-01-01T00:00:00", True),
    (TimeRange(D(2022, 1, 1), None, "after 2021"), "2099-12-31T00:00:00", True),
    (TimeRange(D(2022, 1, 1), None, "after 2021"), D(2021, 12, 31, 23), False),
])
def test_contains(span, when, inside):
    assert span.contains(when) is inside


ODD = [
    "", " ", "\n\t", "?!.,;:-", "2", "20", "202", "19", "1900", "2099", "2100", "0000-00-00",
    "2023-13-01", "2023-00", "99 February 2023", "May", "in", "in in in may", "last", "ago",
    "0 days ago", "9999 days ago", "a few ago", "in 中文 2022年", "٢٠٢٢", "ＭＡＹ ２０２２",
    "Maÿ 2023", "émay 2023", "mayo 2023", "in MAYFAIR", "2022" * 1000, "x" * 100_000,
    " " * 50_000 + "before", "before " + " " * 50_000 + "2022", "\x00\x01\x02 2022 \ufeff",
    "8 8 8 May May May 2023 2023", "since since since", "ſeptember 2023", "Sept.,2022",
]


def _random_strings(n: int) -> list[str]:
    rng = random.Random(0)
    pieces = ["in", "last", "before", "after", "since", "May", "sept", "2022", "8th", "of", ",", ".",
              "-", "05", "ago", "weeks", "a few", "today", "é", "中", " ", "  ", "31", "February", "T"]
    return ["".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 12)))
            for _ in range(n)]


@pytest.mark.parametrize("now", [None, NOW, "2023-01-01", datetime(1, 1, 1), datetime(9999, 12, 31)])
def test_fuzz_never_raises(now):
    for question in ODD + _random_strings(300):
        r = time_range(question, now)
        assert r is None or isinstance(r, TimeRange), question
        if r is not None:
            assert r.start is not None or r.end is not None, question
            assert r.start is None or r.end is None or r.start < r.end, question
            assert r.text and r.text in question, question
