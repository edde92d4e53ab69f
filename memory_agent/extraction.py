"""Step 1 of the pipeline: extract facts worth remembering from dialogue turns.

All turns of a call go to the model in ONE ``generate`` call (batching is what
makes a CPU fast enough). Each completion is a few ``- fact`` lines or
``NONE``. Parsing is forgiving about format but validates content:

* ``NONE`` is an explicit "nothing to remember" and yields no facts;
* an empty or unreadable completion raises :class:`InvalidModelOutput` and the
  turn is counted as skipped - never silently treated as "no facts";
* a fact must be grounded in the turn: most of its content words must occur
  in the turn's text (or image caption). Small models copy their few-shot
  example into unrelated turns ("John loves driving"); this check drops such
  echoes instead of storing invented facts.

Relative dates are resolved in code, not by the model (a 135M model cannot do
date arithmetic): :func:`resolve_dates` rewrites "yesterday", "last Saturday",
"last month", "3 days ago"... against the session date.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from data.dates import MONTHS, display_day, parse_date
from memory_agent.errors import InvalidModelOutput
from memory_agent.llms.base import LLM
from memory_agent.prompts import EXTRACT_EXAMPLE, extraction_messages
from memory_agent.text import FACT_STOP_WORDS, GROUNDED_SHARE, grounded_share

__all__ = [
    "Turn",
    "Fact",
    "ExtractionOutcome",
    "extract_facts",
    "parse_facts",
    "resolve_dates",
    "parse_session_date",
    "MAX_FACT_CHARS",
    "MAX_FACTS_PER_TURN",
]

MAX_FACT_CHARS = 300
MAX_FACTS_PER_TURN = 5
EXTRACT_MAX_NEW_TOKENS = 48


@dataclass(frozen=True)
class Turn:
    """One dialogue turn; ``timestamp`` is the session date (ISO-8601 or LoCoMo style)."""

    speaker: str
    text: str
    dia_id: str | None = None
    blip_caption: str | None = None
    timestamp: str | None = None

    @classmethod
    def from_dict(cls, d: dict, timestamp: str | None = None) -> "Turn":
        if not isinstance(d, dict) or not str(d.get("text", "")).strip():
            from memory_agent.errors import InvalidInput

            raise InvalidInput(f"a turn needs non-empty 'text': {d!r}")
        return cls(
            speaker=str(d.get("speaker") or "user"),
            text=str(d["text"]),
            dia_id=d.get("dia_id"),
            blip_caption=d.get("blip_caption") or d.get("caption"),
            timestamp=d.get("timestamp") or timestamp,
        )


@dataclass(frozen=True)
class Fact:
    text: str
    speaker: str
    dia_id: str | None
    timestamp: str | None


@dataclass
class ExtractionOutcome:
    """Facts per turn (index-aligned with the input) and the turns that failed."""

    facts: list[list[Fact]]
    invalid: list[tuple[int, InvalidModelOutput]]


# ------------------------------------------------------------------ parsing
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_NONE = re.compile(r"^\W*(none|no facts?|nothing)\W*$", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")
_EXAMPLE_FACTS = {
    line[2:].strip().casefold()
    for _, reply in EXTRACT_EXAMPLE
    for line in reply.splitlines()
    if line.startswith("- ")
}


def _content_words(text: str, ignore: set[str]) -> set[str]:
    words = {w.strip("'") for w in _WORD.findall(text.casefold())}
    return {w[:-2] if w.endswith("'s") else w for w in words if w and w not in FACT_STOP_WORDS and w not in ignore}


def _grounded(fact: str, source: str, speaker: str) -> bool:
    ignore = {w for w in _WORD.findall(speaker.casefold())}
    ignore |= {"yesterday", "today", "tomorrow", "last", "week", "month", "year", "ago", "recently"}
    # Stem match tolerates inflection ("volunteering" vs "volunteers").
    share = grounded_share(_content_words(fact, ignore), _content_words(source, set()))
    return share is not None and share >= GROUNDED_SHARE


def parse_facts(raw: str, *, speaker: str, source_text: str) -> list[str]:
    """One completion -> validated fact strings; ``[]`` only for an explicit NONE.

    Raises ``InvalidModelOutput`` when the completion is empty or has no usable fact.
    """
    if raw is None or not raw.strip():
        raise InvalidModelOutput("empty extraction output", raw or "")
    lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
    if _NONE.match(lines[0]):
        return []
    bulleted = [_BULLET.sub("", ln) for ln in lines if _BULLET.match(ln)]
    # No bullets at all: accept plain sentences (forgiving), still validated below.
    candidates = bulleted if bulleted else lines
    facts: list[str] = []
    seen: set[str] = set()
    for cand in candidates:
        fact = cand.strip().strip('"').rstrip(".").strip()
        if re.match(r"^\w[\w ]{0,30}:\s", fact):  # "Maria: ..." is dialogue echo, not a fact
            continue
        if len(fact) < 6 or len(fact.split()) < 2 or len(fact) > MAX_FACT_CHARS:
            continue
        key = fact.casefold()
        if key in seen or key in _EXAMPLE_FACTS:
            continue
        if not _grounded(fact, source_text, speaker):
            continue
        seen.add(key)
        facts.append(fact)
        if len(facts) == MAX_FACTS_PER_TURN:
            break
    if not facts:
        raise InvalidModelOutput("no grounded fact in extraction output", raw)
    return facts


def extract_facts(llm: LLM, turns: Sequence[Turn], *, max_new_tokens: int = EXTRACT_MAX_NEW_TOKENS) -> ExtractionOutcome:
    """Extract facts from every turn with one batched model call."""
    if not turns:
        return ExtractionOutcome([], [])
    batch = [extraction_messages(t.speaker, t.text, t.blip_caption) for t in turns]
    replies = llm.generate(batch, max_new_tokens=max_new_tokens, temperature=0.0, stop=["\n\n"])
    facts: list[list[Fact]] = []
    invalid: list[tuple[int, InvalidModelOutput]] = []
    for i, (turn, raw) in enumerate(zip(turns, replies)):
        source = turn.text + " " + (turn.blip_caption or "")
        try:
            texts = parse_facts(raw, speaker=turn.speaker, source_text=source)
        except InvalidModelOutput as exc:
            invalid.append((i, exc))
            facts.append([])
            continue
        when = parse_session_date(turn.timestamp) if turn.timestamp else None
        facts.append(
            [Fact(resolve_dates(t, when) if when else t, turn.speaker, turn.dia_id, turn.timestamp) for t in texts]
        )
    return ExtractionOutcome(facts, invalid)


# ------------------------------------------------------------------ dates
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "couple of": 2, "a few": 3, "few": 3}


# The one date parser (ISO-8601 and the LoCoMo forms), under the name the product has always used.
parse_session_date = parse_date


def _month(year: int, month: int) -> str:
    while month < 1:
        month += 12
        year -= 1
    while month > 12:
        month -= 12
        year += 1
    return f"{MONTHS[month - 1]} {year}"


def resolve_dates(text: str, when: datetime | date) -> str:
    """Rewrite relative time expressions in ``text`` as absolute dates relative to ``when``."""
    d = when.date() if isinstance(when, datetime) else when
    num = r"(\d+|" + "|".join(sorted(map(re.escape, _NUMBERS), key=len, reverse=True)) + r")"

    def n_of(s: str) -> int:
        s = s.lower()
        return int(s) if s.isdigit() else _NUMBERS[s]

    def ago(m: re.Match) -> str:
        n, unit = n_of(m.group(1)), m.group(2).lower().rstrip("s")
        if unit == "day":
            return f"on {display_day(d - timedelta(days=n))}"
        if unit == "week":
            return f"around {display_day(d - timedelta(weeks=n))}"
        if unit == "month":
            return f"in {_month(d.year, d.month - n)}"
        return f"in {d.year - n}"

    def last_weekday(m: re.Match) -> str:
        target = _WEEKDAYS.index(m.group(1).lower())
        back = (d.weekday() - target) % 7 or 7
        day = d - timedelta(days=back)
        return f"on {m.group(1).capitalize()}, {display_day(day)}"

    rules: list[tuple[str, object]] = [
        (rf"\b{num}\s+(days?|weeks?|months?|years?)\s+ago\b", ago),
        (r"\b(?:last|this past)\s+(" + "|".join(_WEEKDAYS) + r")\b", last_weekday),
        (r"\bthe day before yesterday\b", lambda m: f"on {display_day(d - timedelta(days=2))}"),
        (r"\byesterday\b", lambda m: f"on {display_day(d - timedelta(days=1))}"),
        (r"\btoday\b|\btonight\b|\bthis morning\b|\bthis evening\b", lambda m: f"on {display_day(d)}"),
        (r"\btomorrow\b", lambda m: f"on {display_day(d + timedelta(days=1))}"),
        (r"\blast weekend\b", lambda m: f"the weekend before {display_day(d)}"),
        (r"\blast week\b", lambda m: f"the week before {display_day(d)}"),
        (r"\bnext week\b", lambda m: f"the week after {display_day(d)}"),
        (r"\blast month\b", lambda m: f"in {_month(d.year, d.month - 1)}"),
        (r"\bthis month\b", lambda m: f"in {_month(d.year, d.month)}"),
        (r"\bnext month\b", lambda m: f"in {_month(d.year, d.month + 1)}"),
        (r"\blast year\b", lambda m: f"in {d.year - 1}"),
        (r"\bthis year\b", lambda m: f"in {d.year}"),
        (r"\bnext year\b", lambda m: f"in {d.year + 1}"),
    ]
    out = text
    for pattern, repl in rules:
        out = re.sub(pattern, repl, out, flags=re.IGNORECASE)
    # "on on 7 May" / "in in 2022" after a preposition the model already wrote.
    return re.sub(r"\b(on|in)\s+\1\b", r"\1", out, flags=re.IGNORECASE)
