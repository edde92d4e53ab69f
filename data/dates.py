"""Dates as the project reads and writes them: one parser, one display form.

:func:`parse_date` reads ISO-8601 and the forms people (and LoCoMo) write
("1:56 pm on 8 May, 2023", "8 May 2023", "May 8, 2023"); :func:`display_day`
writes a day the way LoCoMo's gold answers do ("8 May 2023"), which is how
the agents' prompts show dates. The dataset loaders, the product's
extractor, time filters and prompts and the synthetic generator all use these
two, so a format accepted in one place is accepted everywhere.

Standard library only: this module sits at the bottom of the import graph
(``data`` imports nothing of ours; ``memory_agent`` imports this).
"""

from __future__ import annotations

import re
from datetime import date, datetime

__all__ = ["MONTHS", "DATETIME_FORMATS", "parse_date", "display_day"]

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
# "1:56 pm on 8 May, 2023" is the LoCoMo form; the others are accepted so that
# users' own files and timestamps may use plain dates too.
DATETIME_FORMATS = (
    "%I:%M %p on %d %B, %Y",
    "%I:%M %p on %d %b, %Y",
    "%I:%M %p on %B %d, %Y",
    "%d %B, %Y",
    "%d %B %Y",
    "%B %d, %Y",
)


def parse_date(value: str | datetime | date | None) -> datetime | None:
    """A datetime from a datetime, a date, ISO-8601 or one of :data:`DATETIME_FORMATS`; None if unreadable.

    Whitespace runs count as one space and am/pm may be in any case. ISO
    offsets are kept ("Z" is UTC).
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = re.sub(r"\s+", " ", str(value).strip())
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    # strptime's %p wants AM/PM in the C locale's case on some platforms; LoCoMo writes "pm".
    text = re.sub(r"\b(am|pm)\b", lambda m: m.group(1).upper(), text, flags=re.I)
    for fmt in DATETIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def display_day(day: date) -> str:
    """``8 May 2023``: a day as the gold answers (and the agents' prompts) write it."""
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
