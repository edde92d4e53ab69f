"""Content words and stems: the word matching that grounding and scoring share.

The Memory Manager's grounding check (is this text from the facts?) and the
training rewards (is the gold answer in what the Answer Agent is shown?) ask
the same question of words, so they use the same rule: lower-case
alphanumeric runs longer than two characters, minus a small stop list, each
cut to a five-letter stem ("loves"/"loved", "moving"/"moved" match without a
dictionary).
"""

from __future__ import annotations

import re

__all__ = ["STOP_WORDS", "content_words", "stem", "content_stems"]

_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    "a an the and or but to of in on at for with from by is are was were be been has have had do does did "
    "i me my we our you your he him his she her they them their it its this that not no so very just also "
    "now again still new".split()
)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, in order (duplicates kept)."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS and len(w) > 2]


def stem(word: str) -> str:
    """Five-letter prefix: a stem that needs no dictionary."""
    return word[:5]


def content_stems(text: str) -> set[str]:
    """The stems of ``text``'s content words."""
    return {stem(w) for w in content_words(text)}
