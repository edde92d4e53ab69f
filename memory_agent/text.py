"""Words: stop lists, content words, stems and the grounding rule, defined once.

The Memory Manager's grounding check (is this text from the facts?), the
extractor's grounding check (is this fact from the turn?) and the training
rewards (is the gold answer in what the Answer Agent is shown?) ask the same
question of words, so they use the same pieces: lower-case alphanumeric
runs, minus a stop list, each cut to a five-letter stem ("loves"/"loved",
"moving"/"moved" match without a dictionary), and :func:`grounded_share`.

The stop lists are one base (:data:`FUNCTION_WORDS`) plus a named extension
per use, because each use was tuned on its own and merging them would change
what the agents accept:

* :data:`STOP_WORDS` (grounding of operations, rewards, scoring) adds words
  that say an update happened ("now", "again", "still", "new");
* :data:`FACT_STOP_WORDS` (the extractor's fact check) adds chat filler and
  question words ("really", "like", "what"...);
* :data:`QUESTION_STOP_WORDS` (the RLM's question keywords) adds question and
  request words ("tell", "remember", "which"...). The sandbox worker cannot
  import this package, so :mod:`memory_agent.rlm.strategies` keeps a copy
  that a test holds equal to this one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

__all__ = [
    "FUNCTION_WORDS",
    "STOP_WORDS",
    "FACT_STOP_WORDS",
    "QUESTION_STOP_WORDS",
    "GROUNDED_SHARE",
    "content_words",
    "stem",
    "content_stems",
    "grounded_share",
]

_WORD = re.compile(r"[a-z0-9]+")

#: The base every stop list shares: articles, pronouns, auxiliaries, connectives.
FUNCTION_WORDS = frozenset(
    "a an the and or but to of in on at for with from by is are was were be been has have had do does did "
    "i me my we our you your he him his she her they them their it its this that not no so very just also".split()
)
#: Grounding and reward matching: the base plus words that only say a fact changed.
STOP_WORDS = FUNCTION_WORDS | frozenset("now again still new".split())
#: The extractor's fact check: the base plus chat filler and question words.
FACT_STOP_WORDS = FUNCTION_WORDS | frozenset(
    "about all am any as being can could get go going got here how like love loved loves more most really "
    "should some there these those went what when where who will would yes".split()
)
#: Keywords of a question (RLM strategies): the base plus question and request words.
QUESTION_STOP_WORDS = FUNCTION_WORDS | frozenset(
    "about after all am any ask asked assistant before being can could doing each else ever every few having "
    "here hers how if into know less many may might mine more most much must one ones over own please "
    "remember said same say says shall should some tell than then there these those too us user what when "
    "where which who whom whose why will would yes yours".split()
)
#: Share of a text's content words that must occur in its sources for it to count as grounded.
GROUNDED_SHARE = 0.5


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning, in order (duplicates kept)."""
    return [w for w in _WORD.findall(text.casefold()) if w not in STOP_WORDS and len(w) > 2]


def stem(word: str) -> str:
    """Five-letter prefix: a stem that needs no dictionary."""
    return word[:5]


def content_stems(text: str) -> set[str]:
    """The stems of ``text``'s content words."""
    return {stem(w) for w in content_words(text)}


def grounded_share(words: Iterable[str], sources: Collection[str]) -> float | None:
    """Share of ``words`` whose stem is a stem of ``sources``; None when there are no words.

    The one grounding rule: a word counts when its five-letter stem occurs
    among the sources' stems (so "volunteering" is found in "volunteers", and
    a short word must occur as it is). Callers compare it with
    :data:`GROUNDED_SHARE`.
    """
    words = [stem(w) for w in words]
    if not words:
        return None
    have = {stem(s) for s in sources}
    return sum(w in have for w in words) / len(words)
