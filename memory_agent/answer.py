"""Step 3: the Answer Agent answers a question from the user's memories.

Following Memory-R1, it retrieves 60 memories (30 per speaker when the
conversation has two speakers, so one talkative speaker cannot crowd out the
other), shows them as ``[i] date: memory`` oldest first, and asks the model to
first name the memories that help (memory distillation), then give a short
answer after ``**Answer:**``. The prompt is kept within the 2048-token window
of the embedded model by dropping the *least relevant* memories first.

A reply without the marker is not hidden: the last line becomes the answer,
``valid=False``, and callers count it.

Retrieval (:meth:`AnswerAgent.retrieve`) uses the store's ``hybrid`` mode by
default (BM25 and vectors fused by reciprocal rank: names, dates and rare
words are where a small embedder misses). When the question names a time
("last May", "in 2022"; :mod:`memory_agent.timeexpr`, anchored at the
user's newest memory, the conversation's present) the memories dated in it
are searched too and fused with the plain results, dated list first: a
boost, never a hard filter,
because the date in a question can name an event remembered on a later day.
An optional :class:`Reranker` reorders the hits before the token budget.

The steps are public so that training and evaluation use exactly these:
:meth:`AnswerAgent.prompt` (retrieval, budget, display order) and
:meth:`AnswerAgent.read` (the parser). Any
:class:`~memory_store.MemoryBackend` works as the store.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable, Protocol, runtime_checkable

from data.dates import display_day
from memory_agent.defaults import ANSWER_K, ANSWER_MAX_NEW_TOKENS, ANSWER_MAX_PROMPT_TOKENS, ANSWER_RETRIEVAL
from memory_agent.errors import ConfigError
from memory_agent.llms.base import LLM, text_tokens
from memory_agent.prompts import Messages, answer_messages
from memory_agent.timeexpr import TimeRange, time_range

__all__ = ["Answer", "AnswerAgent", "Prepared", "Reranker", "check_retrieval", "parse_answer", "display_date",
           "shown_messages"]


@runtime_checkable
class Reranker(Protocol):
    """Reorders (and may drop) retrieved hits for a query; returns them best first."""

    def rerank(self, query: str, hits: Sequence[Any]) -> list[Any]: ...

_STRICT_MARKER = re.compile(r"\*\*\s*answer\s*(?::\s*\*\*|\*\*\s*:)", re.IGNORECASE)


@dataclass
class Answer:
    text: str
    memories: list[Any]  # the memories the model selected (records)
    retrieved: list[Any]  # everything it was shown
    raw: str
    valid: bool
    question: str = ""
    strategy: str = "memory"
    extra: dict[str, Any] = field(default_factory=dict)
    search_ms: float | None = None  # the retrieval this answer ran (store searches and rerank)
    ranked: list[Any] = field(default_factory=list)  # the retrieval's hits best first, before the token budget


@dataclass(frozen=True)
class Prepared:
    """One question ready for the model: its prompt, the memories in it, the retrieval and its time."""

    messages: Messages
    shown: list[Any]  # in the prompt, oldest first
    ranked: list[Any]  # the retrieval's hits best first, before the token budget
    search_ms: float


def check_retrieval(mode: Any) -> str:
    """A search mode of :data:`memory_store.SEARCH_MODES`, else :class:`ConfigError`."""
    from memory_store import SEARCH_MODES

    if mode not in SEARCH_MODES:
        raise ConfigError(f"unknown retrieval mode {mode!r}; choose from {', '.join(SEARCH_MODES)}")
    return mode


def parse_answer(raw: str, n_shown: int) -> tuple[str, list[int], bool]:
    """-> (answer text, selected indices into the shown list, valid)."""
    raw = raw or ""
    m = _STRICT_MARKER.search(raw)
    if m is None:
        # Tolerate a plain "Answer:" line; anything else is an invalid (counted) reply.
        m = re.search(r"(?im)^[^\S\n]*answer\s*:\s*", raw)  # [^\S\n]: blank lines cost linear, not quadratic
    if m is not None:
        head, tail = raw[: m.start()], raw[m.end() :]
        lines = [ln.strip() for ln in tail.strip().splitlines() if ln.strip()]
        text = lines[0] if lines else ""
        valid = bool(text)
    else:
        head = raw
        lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
        valid = False
    text = text.strip().strip("*").strip()[:300]
    if re.fullmatch(r"(\[\d+\][\s,]*)+", text):  # only memory numbers, no answer
        valid = False
    selected: list[int] = []
    # Possessive \s*+: a long blank run after "relevant" must not be re-split (quadratic).
    for tok in re.findall(r"\[(\d+)\]|\b(?:relevant|memories?)\s*+:?\s*+((?:\d+\s*+,?\s*+)+)", head, re.IGNORECASE):
        nums = [tok[0]] if tok[0] else re.findall(r"\d+", tok[1])
        for n in nums:
            if len(n) > 9:  # not a shown index, and int() refuses 4,300+ digits
                continue
            i = int(n)
            if 0 <= i < n_shown and i not in selected:
                selected.append(i)
    return text, selected, valid


class AnswerAgent:
    """Retrieves, prompts, generates and parses; ``llm`` may be None for prompt/read only."""

    def __init__(
        self,
        llm: LLM | None,
        store: Any,
        *,
        k: int = ANSWER_K,
        retrieval: str = ANSWER_RETRIEVAL,
        time_aware: bool = True,
        reranker: Reranker | None = None,
        max_prompt_tokens: int = ANSWER_MAX_PROMPT_TOKENS,
        max_new_tokens: int = ANSWER_MAX_NEW_TOKENS,
        count_tokens: Callable[[str], int] | None = None,
    ):
        check_retrieval(retrieval)
        if reranker is not None and not isinstance(reranker, Reranker):
            raise ConfigError(f"not a reranker (needs rerank(query, hits)): {reranker!r}")
        self.llm = llm
        self.store = store
        self.k = k
        self.retrieval = retrieval
        self.time_aware = time_aware
        self.reranker = reranker
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self._count_tokens = count_tokens

    def present(self, user_id: str) -> tuple[list[str], str | None]:
        """The user's speakers (first-seen order) and newest memory time: the conversation's present."""
        records = self.store.list(user_id)
        speakers = [s for r in records if isinstance(s := (r.metadata or {}).get("speaker"), str)]
        return list(dict.fromkeys(speakers)), max((str(r.created_at) for r in records), default=None)

    def speakers(self, user_id: str) -> list[str]:
        return self.present(user_id)[0]

    def when(self, question: str, now: str | None) -> TimeRange | None:
        """The time the question names, anchored at ``now`` (None: no time named, or time awareness off)."""
        return time_range(question, now=now) if self.time_aware else None

    def retrieve(self, question: str, user_id: str, speakers: Sequence[str] | None = None,
                 when: TimeRange | None = None) -> list[Any]:
        """Best-first hits: k/2 per speaker when there are exactly two, else k.

        ``when`` (a time the question names) searches the memories dated in it too
        and fuses that list (first) with the plain one by reciprocal rank. Scores are comparable across
        the speakers' lists (both are from the same mode), so the merge is by score.
        """
        from memory_store import rrf

        speakers = list(speakers) if speakers is not None else self.speakers(user_id)
        groups: list[dict[str, Any] | None] = [{"speaker": s} for s in speakers] if len(speakers) == 2 else [None]
        per = max(1, self.k // len(groups))
        hits: list[Any] = []
        for group in groups:
            found = self.store.search(question, user_id=user_id, k=per, mode=self.retrieval, filters=group)
            if when is not None:
                dated = when.as_filter("created_at") if group is None else {"$and": [group, when.as_filter("created_at")]}
                timed = self.store.search(question, user_id=user_id, k=per, mode=self.retrieval, filters=dated)
                # Fused even when nothing is in time, so every group's scores are on the RRF scale;
                # the dated list first, so a tie goes to the memory from the time the question names.
                by_id = {h.id: h for h in [*found, *timed]}
                fused = rrf([[h.id for h in timed], [h.id for h in found]])[:per]
                found = [by_id[i].model_copy(update={"score": s}) for i, s in fused]
            hits.extend(found)
        hits.sort(key=lambda h: -h.score)
        if self.reranker is not None:
            hits = list(self.reranker.rerank(question, hits))
        return hits

    def _count(self, text: str) -> int:
        if self._count_tokens is not None:
            return self._count_tokens(text)
        return text_tokens(self.llm, text)  # the model's tokenizer, or ~4 characters a token

    def build(self, question: str, hits: Sequence[Any]) -> tuple[Messages, list[Any]]:
        """Prompt + the shown memories (oldest first), trimmed to the token budget."""
        base = self._count("".join(m["content"] for m in answer_messages(question, []))) + 40  # template tokens
        budget = self.max_prompt_tokens - base
        kept = []
        for h in hits:  # best first: the least relevant are the ones left out
            cost = self._count(f"[00] {display_date(h)}: {h.text}\n")
            if cost > budget:
                break
            budget -= cost
            kept.append(h)
        kept.sort(key=lambda h: (_date(h), h.id))
        return shown_messages(question, kept), kept

    def prompt(self, question: str, user_id: str, speakers: Sequence[str] | None = None) -> tuple[Messages, list[Any]]:
        """What the model is shown for ``question``: the messages and the memories in them."""
        found, now = self.present(user_id)
        speakers = list(speakers) if speakers is not None else found
        return self.build(question, self.retrieve(question, user_id, speakers, self.when(question, now)))

    @staticmethod
    def read(question: str, shown: Sequence[Any], raw: str) -> Answer:
        """Parse a reply to the prompt that showed ``shown`` (the product's rule, marker and all)."""
        text, selected, valid = parse_answer(raw, len(shown))
        return Answer(text, [shown[i] for i in selected], list(shown), raw, valid, question=question)

    def ask(self, prompts: Sequence[Messages]) -> list[str]:
        """Raw replies to built prompts: one batched, greedy call with the product's budget."""
        if self.llm is None:
            raise ConfigError("this AnswerAgent has no model: it can build prompts and read replies only")
        if not prompts:
            return []
        return self.llm.generate(list(prompts), max_new_tokens=self.max_new_tokens, temperature=0.0)

    def answer(self, question: str, user_id: str, speakers: Sequence[str] | None = None) -> Answer:
        return self.answer_many([question], user_id, speakers=speakers)[0]

    def prepare(self, questions: Sequence[str], user_id: str,
                speakers: Sequence[str] | None = None) -> list[Prepared]:
        """Retrieve (timed) and build the prompt of every question: what ``answer_many`` sends."""
        found, now = self.present(user_id)
        speakers = list(speakers) if speakers is not None else found
        out = []
        for q in questions:
            start = time.perf_counter()
            hits = self.retrieve(q, user_id, speakers, self.when(q, now))
            ms = (time.perf_counter() - start) * 1000
            messages, kept = self.build(q, hits)
            out.append(Prepared(messages, kept, hits, ms))
        return out

    def answer_many(self, questions: Sequence[str], user_id: str, speakers: Sequence[str] | None = None) -> list[Answer]:
        """Answer several questions with one batched generate call."""
        if not questions:
            return []
        prepared = self.prepare(questions, user_id, speakers)
        replies = self.ask([p.messages for p in prepared])
        answers = [self.read(q, p.shown, raw) for q, p, raw in zip(questions, prepared, replies)]
        for a, p in zip(answers, prepared):
            a.search_ms, a.ranked = p.search_ms, p.ranked
        return answers


def _date(record: Any) -> str:
    """ISO date (sorts chronologically); the time of day costs tokens and rarely matters."""
    return str(getattr(record, "updated_at", "") or getattr(record, "created_at", ""))[:10]


def shown_messages(question: str, shown: Sequence[Any]) -> list[dict[str, str]]:
    """The Answer Agent's messages for memories already chosen and ordered (``[i] date: text``)."""
    return answer_messages(question, [(display_date(m), str(m.text)) for m in shown])


def display_date(record: Any) -> str:
    """A memory's (or an ISO timestamp's) date as the prompt shows it: ``19 January 2023``.

    Written the way people (and LoCoMo's gold answers) write dates, not ISO:
    a small model copies the date it is shown, and "2023-01-19" shares no
    token with "19 January, 2023", so an ISO date that is right still scores 0.
    Anything that is not an ISO date is shown as it is.
    """
    value = record if isinstance(record, str) else _date(record)
    try:
        day = date.fromisoformat(value[:10])
    except ValueError:
        return value
    return display_day(day)
