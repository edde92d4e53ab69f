"""Step 3: the Answer Agent answers a question from the user's memories.

Following Memory-R1, it retrieves 60 memories (30 per speaker when the
conversation has two speakers, so one talkative speaker cannot crowd out the
other), shows them as ``[i] date: memory`` oldest first, and asks the model to
first name the memories that help (memory distillation), then give a short
answer after ``**Answer:**``. The prompt is kept within the 2048-token window
of the embedded model by dropping the *least relevant* memories first.

A reply without the marker is not hidden: the last line becomes the answer,
``valid=False``, and callers count it.

The steps are public so that training and evaluation use exactly these:
:meth:`AnswerAgent.prompt` (retrieval, budget, display order) and
:meth:`AnswerAgent.read` (the parser). Any
:class:`~memory_store.MemoryBackend` works as the store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Callable

from memory_agent.defaults import ANSWER_K, ANSWER_MAX_NEW_TOKENS, ANSWER_MAX_PROMPT_TOKENS
from memory_agent.errors import ConfigError
from memory_agent.llms.base import LLM
from memory_agent.prompts import Messages, answer_messages

__all__ = ["Answer", "AnswerAgent", "parse_answer", "display_date", "shown_messages"]

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


def parse_answer(raw: str, n_shown: int) -> tuple[str, list[int], bool]:
    """-> (answer text, selected indices into the shown list, valid)."""
    raw = raw or ""
    m = _STRICT_MARKER.search(raw)
    if m is None:
        # Tolerate a plain "Answer:" line; anything else is an invalid (counted) reply.
        m = re.search(r"(?im)^\s*answer\s*:\s*", raw)
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
    for tok in re.findall(r"\[(\d+)\]|\b(?:relevant|memories?)\s*:?\s*((?:\d+\s*,?\s*)+)", head, re.IGNORECASE):
        nums = [tok[0]] if tok[0] else re.findall(r"\d+", tok[1])
        for n in nums:
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
        max_prompt_tokens: int = ANSWER_MAX_PROMPT_TOKENS,
        max_new_tokens: int = ANSWER_MAX_NEW_TOKENS,
        count_tokens: Callable[[str], int] | None = None,
    ):
        self.llm = llm
        self.store = store
        self.k = k
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self._count_tokens = count_tokens

    def speakers(self, user_id: str) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.store.list(user_id):
            s = (r.metadata or {}).get("speaker")
            if isinstance(s, str):
                seen.setdefault(s)
        return list(seen)

    def retrieve(self, question: str, user_id: str, speakers: Sequence[str] | None = None) -> list[Any]:
        """Best-first hits: k/2 per speaker when there are exactly two, else k."""
        speakers = list(speakers) if speakers is not None else self.speakers(user_id)
        if len(speakers) == 2:
            per = self.k // 2
            a = self.store.search(question, user_id=user_id, k=per, metadata_filter={"speaker": speakers[0]})
            b = self.store.search(question, user_id=user_id, k=per, metadata_filter={"speaker": speakers[1]})
            return sorted(a + b, key=lambda h: -h.score)
        return self.store.search(question, user_id=user_id, k=self.k)

    def _count(self, text: str) -> int:
        if self._count_tokens is not None:
            return self._count_tokens(text)
        tok = getattr(self.llm, "tokenizer", None)
        if tok is not None:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        return len(text) // 4 + 1  # ~4 characters per token for English

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
        return self.build(question, self.retrieve(question, user_id, speakers))

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

    def answer_many(self, questions: Sequence[str], user_id: str, speakers: Sequence[str] | None = None) -> list[Answer]:
        """Answer several questions with one batched generate call."""
        if not questions:
            return []
        speakers = list(speakers) if speakers is not None else self.speakers(user_id)
        prompts, shown = [], []
        for q in questions:
            messages, kept = self.prompt(q, user_id, speakers)
            prompts.append(messages)
            shown.append(kept)
        replies = self.ask(prompts)
        return [self.read(q, kept, raw) for q, kept, raw in zip(questions, shown, replies)]


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
    return f"{day.day} {day:%B %Y}"
