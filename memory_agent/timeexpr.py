"""The time a question is about: "last May", "in 2022", "before June 2023".

The Answer Agent retrieves memories stamped with their conversation date
(``2023-05-08T13:56:00``). When a question names a time, memories dated inside
it are likelier to hold the answer, so the caller gives them a ranking boost.
The boost is a hint, never a hard filter: an event of May can be remembered in
a June conversation ("I went hiking last month"), and a filter would hide it.

Relative expressions ("last year", "two weeks ago") are resolved against a
``now`` the caller passes in -- the newest memory's date, the present of the
conversation -- never the wall clock, because the conversations happened in
the past. Without ``now`` only absolute dates resolve.

The grammar is small (English, a few dozen forms) and conservative: anything
doubtful yields ``None`` rather than a wrong boost, and no input raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from data.dates import parse_date

__all__ = ["TimeRange", "time_range"]

Bounds = tuple[datetime | None, datetime | None]
_Resolver = Callable[[re.Match[str], datetime | None], Bounds | None]


@dataclass(frozen=True)
class TimeRange:
    """A half-open span of naive datetimes; ``None`` on either side means open."""

    start: datetime | None
    end: datetime | None
    text: str

    def as_filter(self, field: str = "created_at") -> dict[str, dict[str, str]]:
        """A Mongo-style range filter on ``field``, with only the bounds that are set."""
        bounds: dict[str, str] = {}
        if self.start is not None:
            bounds["$gte"] = self.start.isoformat()
        if self.end is not None:
            bounds["$lt"] = self.end.isoformat()
        return {field: bounds}

    def contains(self, when: datetime | str) -> bool:
        """Whether ``when`` (a datetime or ISO string) falls inside; unreadable -> False."""
        moment = _naive(when)
        if moment is None:
            return False
        return (self.start is None or self.start <= moment) and (self.end is None or moment < self.end)


def _naive(value: object) -> datetime | None:
    """A naive datetime from a datetime, date or date string (:func:`data.dates.parse_date`); aware ones go to UTC first.

    Memory timestamps are naive, so comparing like with like avoids TypeError.
    """
    try:
        moment = parse_date(value) if isinstance(value, (str, date)) else None
        if moment is not None and moment.tzinfo is not None and moment.utcoffset() is not None:
            moment = moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    return None if moment is None else moment.replace(tzinfo=None)


# --- calendar spans -------------------------------------------------------

def _day(d: date) -> Bounds:
    start = datetime.combine(d, time())
    return start, start + timedelta(days=1)


def _month(year: int, month: int) -> Bounds:
    nxt_year, nxt_month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, 1), datetime(nxt_year, nxt_month, 1)


def _year(year: int) -> Bounds:
    return datetime(year, 1, 1), datetime(year + 1, 1, 1)


def _months_back(now: datetime, n: int) -> Bounds:
    year, month0 = divmod(now.year * 12 + now.month - 1 - n, 12)
    return _month(year, month0 + 1)


# --- the words ------------------------------------------------------------

_MONTHS = {name: i for i, name in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}
_NUMBERS = {w: i for i, w in enumerate(
    "one two three four five six seven eight nine ten eleven twelve".split(), start=1)}

_MONTH = (r"\b(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?"
          r"|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b")
# [0-9], not \d: \d also takes other scripts' digits, which int() would then read.
_YEAR = r"(?P<year>(?:19|20)[0-9]{2})(?!\w)"
_DAY = r"(?<!\w)(?P<day>[0-9]{1,2})(?:st|nd|rd|th)?"
# A bare month name is usually the verb "may" or a name ("Jan") unless one of
# these words puts it in time.
_TRIGGERS = "in|last|this|during|since|before|after|early|late|of"
_OPERATOR = re.compile(r"\b(before|after|since)\s+$", re.IGNORECASE)


def _month_number(m: re.Match[str]) -> int:
    return _MONTHS[m["mon"].casefold()[:3]]


def _count(word: str) -> int:
    word = " ".join(word.casefold().split())
    if word.isdigit():
        return int(word)
    if word == "a":
        return 1
    if "couple" in word:
        return 2
    if "few" in word:  # "a few" is vague; three is its usual size
        return 3
    return _NUMBERS[word]


# --- resolvers: match + now -> bounds, or None when it cannot be resolved --

def _iso_day(m: re.Match[str], now: datetime | None) -> Bounds:
    return _day(date(int(m["year"]), int(m["mnum"]), int(m["day"])))


def _iso_month(m: re.Match[str], now: datetime | None) -> Bounds:
    return _month(int(m["year"]), int(m["mnum"]))


def _named_day(m: re.Match[str], now: datetime | None) -> Bounds:
    return _day(date(int(m["year"]), _month_number(m), int(m["day"])))


def _named_month(m: re.Match[str], now: datetime | None) -> Bounds:
    return _month(int(m["year"]), _month_number(m))


def _bare_year(m: re.Match[str], now: datetime | None) -> Bounds:
    return _year(int(m["year"]))


def _bare_month(m: re.Match[str], now: datetime | None) -> Bounds | None:
    if now is None:
        return None
    month, trigger = _month_number(m), m["trig"].casefold()
    if trigger == "this":
        return _month(now.year, month)
    # "last May" in May means a year ago; "in May" in May means this one.
    past = month < now.month if trigger == "last" else month <= now.month
    return _month(now.year if past else now.year - 1, month)


def _relative(m: re.Match[str], now: datetime | None) -> Bounds | None:
    if now is None:
        return None
    today = now.date()
    if m["word"]:
        word = m["word"].casefold()
        return _day(today - timedelta(days=1) if word == "yesterday" else today)
    if m["week"]:
        # Day granularity: the seven days before today, not a calendar week.
        end = datetime.combine(today, time())
        return end - timedelta(days=7), end
    this = m["which"].casefold() == "this"
    if m["unit"].casefold() == "month":
        return _months_back(now, 0 if this else 1)
    return _year(now.year if this else now.year - 1)


def _ago(m: re.Match[str], now: datetime | None) -> Bounds | None:
    if now is None:
        return None
    n, unit = _count(m["n"]), m["unit"].casefold()
    # "Two weeks ago" is approximate, so days and weeks get a window around the point.
    if unit in ("day", "week"):
        days, slack = (n, 1) if unit == "day" else (7 * n, 3)
        point = datetime.combine(now.date() - timedelta(days=days), time())
        return point - timedelta(days=slack), point + timedelta(days=slack + 1)
    if unit == "month":
        return _months_back(now, n)
    return _year(now.year - n)


_N = (r"(?P<n>[0-9]{1,4}|(?:a\s+)?few|(?:a\s+)?couple(?:\s+of)?|a"
      r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)")

# Order breaks ties between matches of equal start and length.
_RULES: tuple[tuple[re.Pattern[str], _Resolver], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), resolver) for pattern, resolver in (
        (r"(?<![\w.-])" + r"(?P<year>(?:19|20)[0-9]{2})-(?P<mnum>[0-9]{2})-(?P<day>[0-9]{2})(?![0-9])",
         _iso_day),
        (r"(?<![\w.-])" + r"(?P<year>(?:19|20)[0-9]{2})-(?P<mnum>0[1-9]|1[0-2])(?![\w-])", _iso_month),
        (_DAY + r"\s+(?:of\s+)?" + _MONTH + r"\.?,?\s+" + _YEAR, _named_day),
        (_MONTH + r"\.?\s+" + _DAY + r",?\s+" + _YEAR, _named_day),
        (_MONTH + r"\.?(?:,\s*|\s+)(?:of\s+)?" + _YEAR, _named_month),
        # Not a decimal, an amount or part of a longer number.
        (r"(?<![\w.$€£])(?P<year>(?:19|20)[0-9]{2})(?!\w|[.,][0-9])", _bare_year),
        (r"\b(?P<trig>" + _TRIGGERS + r")\s+" + _MONTH, _bare_month),
        (r"\b(?:(?P<which>last|this|previous)\s+(?P<unit>year|month)|(?P<week>last|previous)\s+week"
         r"|(?P<word>yesterday|today))\b", _relative),
        (r"\b" + _N + r"\s+(?P<unit>day|week|month|year)s?\s+ago\b", _ago),
    )
)


@dataclass(frozen=True)
class _Candidate:
    key: int  # where the time itself starts: orders candidates leftmost-first
    end: int
    match: re.Match[str]
    resolve: _Resolver


def _candidates(question: str) -> list[_Candidate]:
    found = []
    for order, (pattern, resolver) in enumerate(_RULES):
        for m in pattern.finditer(question):
            # A trigger word is context, not the time: "in May 2023" must be
            # read as the month of 2023 starting at "May", not as bare "in May".
            key = m.start("mon") if "trig" in pattern.groupindex else m.start()
            found.append((key, -(m.end() - key), order, _Candidate(key, m.end(), m, resolver)))
    found.sort(key=lambda item: item[:3])
    return [item[3] for item in found]


def _apply_operator(question: str, cand: _Candidate, bounds: Bounds) -> TimeRange:
    """Wrap the span in a preceding before/after/since, if any."""
    m = cand.match
    start = m.start()
    trigger = m.groupdict().get("trig")
    if trigger and trigger.casefold() in ("before", "after", "since"):
        operator: str | None = trigger.casefold()
    else:
        op = _OPERATOR.search(question, 0, start)
        operator = op[1].casefold() if op else None
        if op:
            start = op.start()
    lo, hi = bounds
    if operator == "before":
        lo, hi = None, lo
    elif operator == "after":
        lo, hi = hi, None
    elif operator == "since":
        hi = None
    return TimeRange(lo, hi, question[start:cand.end])


def time_range(question: str, now: datetime | str | None = None) -> TimeRange | None:
    """The first (leftmost) resolvable time expression in ``question``, or None.

    ``now`` anchors relative expressions; an aware one is taken in UTC, an
    unreadable one counts as absent. A match that cannot be resolved (an
    invalid date, or a relative one without ``now``) is skipped together with
    anything overlapping it, so "31 February 2023" does not fall back to 2023.
    """
    if not isinstance(question, str) or not question:
        return None
    ref = _naive(now) if now is not None else None
    blocked_until = -1  # candidates are sorted by start, so one bound covers every skipped span
    for cand in _candidates(question):
        if cand.key < blocked_until:
            continue
        try:
            bounds = cand.resolve(cand.match, ref)
        except (ValueError, OverflowError, KeyError):
            bounds = None
        if bounds is None:
            blocked_until = max(blocked_until, cand.end)
            continue
        return _apply_operator(question, cand, bounds)
    return None
