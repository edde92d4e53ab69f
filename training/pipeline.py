"""The training code's one window onto the inference pipeline.

Rewards and episodes must see *exactly* what the product's agents see and do:
the same manager prompt over the same related memories (top 10, best score
per memory over the turn's facts), the same operation parser and stop rule,
the same Answer Agent retrieval (60 memories, split 30/30 between two
speakers), token budget, oldest-first display and answer parser. Everything
the training package needs from ``memory_agent`` goes through the functions
here, which call the pipeline's own code wherever it is reusable, so a change
in the pipeline is picked up (or absorbed) in one module.

The functions work on :class:`~training.bank.SnapshotBank` copies rather than
on a ``MemoryStore``; the ranking is the same (cosine over the same embedder,
the store's flat index is exact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memory_agent.answer import ANSWER_MAX_NEW_TOKENS
from memory_agent.errors import InvalidModelOutput
from memory_agent.llms.base import truncate_at_stop
from memory_agent.manager import MANAGER_MAX_NEW_TOKENS
from memory_agent.prompts import ANSWER_MARKER

__all__ = [
    "ANSWER_MARKER",
    "MANAGER_TOP_K",
    "MANAGER_STOP",
    "MANAGER_MAX_NEW_TOKENS",
    "ANSWER_MAX_NEW_TOKENS",
    "ANSWER_K",
    "parse_answer",
    "answer_text",
    "answer_retrieve",
    "answer_messages",
    "answer_prompt",
    "manager_shown",
    "manager_messages",
    "parse_manager_ops",
    "apply_manager_ops",
    "render_manager_ops",
]

#: Related memories shown to the manager (``Memory(top_k=10)``).
MANAGER_TOP_K = 10
#: The manager's generation stops at a blank line; the rest is never parsed.
MANAGER_STOP = ["\n\n"]
#: Memories retrieved for the Answer Agent (``Memory(answer_k=60)``, Memory-R1's 60).
ANSWER_K = 60


# ------------------------------------------------------------------ Answer Agent
def parse_answer(text: str) -> str | None:
    """The answer after the marker, or ``None`` when the pipeline would count the reply invalid."""
    from memory_agent.answer import parse_answer as pipeline_parse

    answer, _selected, valid = pipeline_parse(text or "", 0)
    return answer if valid else None


def answer_text(text: str) -> tuple[str, bool]:
    """What the pipeline *uses* as the answer (its last-line fallback included) and whether it was valid."""
    from memory_agent.answer import parse_answer as pipeline_parse

    answer, _selected, valid = pipeline_parse(text or "", 0)
    return answer, valid


def answer_retrieve(bank: Any, question: str, k: int = ANSWER_K) -> list[Any]:
    """``AnswerAgent.retrieve`` on a snapshot: k/2 per speaker when there are exactly two, best first."""
    speakers = bank.speakers()
    if len(speakers) == 2:
        per = k // 2
        hits = bank.search_scored(question, per, speaker=speakers[0]) + bank.search_scored(
            question, per, speaker=speakers[1]
        )
        return [r for r, _ in sorted(hits, key=lambda h: -h[1])]
    return bank.search(question, k)


class _TokenCounter:
    """Lets ``AnswerAgent.build`` count tokens with a tokenizer and no model."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer


def answer_prompt(question: str, memories: Sequence[Any], *, llm: Any = None, tokenizer: Any = None) -> tuple[list[dict[str, str]], list[Any]]:
    """The Answer Agent's prompt over ``memories`` (best first), as ``AnswerAgent.build`` makes it,
    with the memories it kept in display order (their prompt numbers are their positions).

    The token budget is counted with ``tokenizer`` (or ``llm.tokenizer``);
    without either, with the pipeline's ~4-characters-per-token estimate.
    """
    from memory_agent.answer import AnswerAgent

    counter = llm if tokenizer is None else _TokenCounter(tokenizer)
    agent = AnswerAgent(counter if counter is not None else _TokenCounter(None), None)
    return agent.build(question, list(memories))


def answer_messages(question: str, memories: Sequence[Any], *, llm: Any = None, tokenizer: Any = None) -> list[dict[str, str]]:
    """Only the messages of :func:`answer_prompt`."""
    return answer_prompt(question, memories, llm=llm, tokenizer=tokenizer)[0]


# ------------------------------------------------------------------ Memory Manager
def manager_shown(bank: Any, facts: Sequence[str], top_k: int = MANAGER_TOP_K) -> list[Any]:
    """``MemoryManager.retrieve`` on a snapshot: each fact's top-k, best score per memory, top-k overall."""
    best: dict[int, tuple[Any, float]] = {}
    for fact in facts:
        for record, score in bank.search_scored(fact, top_k):
            if record.id not in best or score > best[record.id][1]:
                best[record.id] = (record, score)
    ranked = sorted(best.values(), key=lambda t: -t[1])
    return [r for r, _ in ranked[:top_k]]


def manager_messages(facts: Sequence[str], shown: Sequence[Any]) -> list[dict[str, str]]:
    """The manager's chat messages: new ``facts`` and the ``shown`` memories (records or texts, numbered 0..n-1)."""
    from memory_agent import prompts

    return prompts.manager_messages(list(facts), [m if isinstance(m, str) else m.text for m in shown])


def parse_manager_ops(raw: str, n_shown: int, facts: Sequence[str] | None = None,
                      shown: Sequence[Any] | None = None) -> list[Any]:
    """The pipeline's parser, after the pipeline's stop rule (text after a blank line is never seen),
    then - given the turn's ``facts`` and the ``shown`` memories (records, dicts or texts) - the
    pipeline's grounding check, so a reward accepts exactly what ``MemoryManager`` would apply."""
    from memory_agent.operations import check_grounded, parse_operations

    text = truncate_at_stop(raw or "", MANAGER_STOP)
    ops = list(parse_operations(text, n_shown))
    if facts is not None and shown is not None:
        check_grounded(ops, list(facts), [_text_of(m) for m in shown], text)
    return ops


def _text_of(memory: Any) -> str:
    if isinstance(memory, str):
        return memory
    if isinstance(memory, dict):
        return str(memory["text"])
    return str(memory.text)


def apply_manager_ops(
    bank: Any, ops: Sequence[Any], shown_ids: Sequence[int], timestamp: str | None, speaker: str | None = None
) -> None:
    """Apply model-facing ops (small id ``i`` = ``shown_ids[i]``) to a SnapshotBank, as ``MemoryManager._apply``."""
    for op in ops:
        kind = str(getattr(op, "op", "")).upper()
        if kind == "NOOP":
            continue
        if kind == "ADD":
            bank.add(op.text, timestamp, speaker)
            continue
        small = int(op.id)
        if not 0 <= small < len(shown_ids):
            raise InvalidModelOutput(f"operation refers to memory {small}, only 0..{len(shown_ids) - 1} shown", str(op))
        try:
            if kind == "UPDATE":
                bank.update(shown_ids[small], op.text, timestamp)
            elif kind == "DELETE":
                bank.delete(shown_ids[small])
            else:
                raise InvalidModelOutput(f"unknown operation {kind!r}", str(op))
        except KeyError as exc:
            raise InvalidModelOutput(f"memory {small} is not in the bank any more", str(op)) from exc


def render_manager_ops(ops: Sequence[Any]) -> str:
    """Model-facing ops -> the completion text the manager is trained to write (cold start targets)."""
    from memory_agent.operations import format_operations

    return format_operations(list(ops))
