"""One scorer per agent: what the harness reports, validation measures and GRPO rewards.

The evaluation harness, training validation and the GRPO rewards all score
the same things, so the scoring lives once, here, on top of the product's
own parsing (:meth:`memory_agent.answer.AnswerAgent.read`) and the metric
functions of :mod:`eval.metrics`:

* :func:`answer_metrics`: every metric of one answer against its gold (the
  harness's row scores; the answer reward's F1/EM).
* :func:`memory_view` / :func:`answer_recall`: how much of the gold answer's
  content is in a list of memories *as the Answer Agent is shown them* (date
  and text). The harness reports it per question (retrieval vs answering
  failures), the manager reward is built on it, the answer reward's "quoted
  the right memory" bonus uses it.
* :func:`memory_source` / :func:`evidence_recall`: which dialogue turn a
  memory (or a raw turn) came from, and the share of a question's evidence
  turns among retrieved ones: retrieval measured against the dataset's own
  labels, not against words.
* :func:`states_superseded`: whether shown memories still state a value a
  change superseded ("lives in Lisbon" after the move to Denver).
* :class:`AnswerScore` and :func:`score_answer_reply`: one reply of the
  Answer Agent, parsed by the product and scored; :func:`answer_reward` is
  the GRPO reward of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eval import metrics
from memory_agent.answer import AnswerAgent, display_date
from memory_agent.text import content_stems

__all__ = [
    "METRICS",
    "answer_metrics",
    "best_score",
    "memory_view",
    "answer_recall",
    "memory_source",
    "evidence_recall",
    "states_superseded",
    "AnswerScore",
    "score_answer_reply",
    "answer_reward",
    "MISSING_MARKER_PENALTY",
    "QUOTE_BONUS",
]

#: Metrics a reward can be built on.
METRICS = ("em", "f1")
#: Answer reward: subtracted when the reply lacks ``**Answer:**`` (the product counts it invalid).
MISSING_MARKER_PENALTY = 0.5
#: Answer reward: added in proportion to the gold answer's content found in the quoted memories.
QUOTE_BONUS = 0.2


def answer_metrics(pred: str, gold: str, category: int = 4) -> dict[str, float]:
    """Every metric of one answer (both F1 kinds, so a summary can switch later)."""
    return {
        "f1_mem0": metrics.token_f1(pred, gold),
        "f1_locomo": metrics.locomo_f1(pred, gold, category),
        "bleu1": metrics.bleu1(pred, gold),
        "em": metrics.exact_match(pred, gold),
    }


def best_score(pred: str, gold: Any, metric: str = "f1") -> float:
    """Best ``em``/``f1`` (Mem0 token F1) of ``pred`` over the acceptable gold answers."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    fn = metrics.exact_match if metric == "em" else metrics.token_f1
    golds = [str(g) for g in gold if g is not None] if isinstance(gold, (list, tuple)) else [str(gold)]
    return max((float(fn(pred, g)) for g in golds), default=0.0)


def memory_view(memory: Any) -> str:
    """A memory as the Answer Agent's prompt shows it: ``19 January 2023: text``."""
    if isinstance(memory, str):
        return memory
    return f"{display_date(memory)}: {memory.text}"


def answer_recall(gold: str, memories: Sequence[Any]) -> float | None:
    """Share of the gold answer's content stems found in ``memories`` (records or texts).

    ``None`` when the gold answer has no content word ("Yes"): such a question
    says nothing about which memories matter.
    """
    want = content_stems(str(gold))
    if not want:
        return None
    have: set[str] = set()
    for m in memories:
        have |= content_stems(memory_view(m))
    return len(want & have) / len(want)


def memory_source(memory: Any) -> str | None:
    """The dialogue id a memory or stored turn came from (``metadata["source"]``), if recorded."""
    source = (getattr(memory, "metadata", None) or {}).get("source")
    return source if isinstance(source, str) and source else None


def evidence_recall(evidence: Sequence[str], sources: Sequence[str | None]) -> float | None:
    """Share of the question's evidence turns that some retrieved item came from.

    ``None`` when the question lists no evidence (nothing to find). An
    UPDATEd memory counts for the turn that first added it.
    """
    want = {str(e) for e in evidence if e}
    if not want:
        return None
    return len(want & {s for s in sources if s}) / len(want)


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(phrase.casefold())}(?![a-z0-9])", text.casefold()) is not None


def states_superseded(superseded: Sequence[str], current: Sequence[str], memories: Sequence[Any]) -> bool:
    """Whether some memory names a superseded value and none of the current ones.

    "Alice lives in Lisbon" states the old fact; "Alice moved from Lisbon to
    Denver" names both values and is the current fact.
    """
    for m in memories:
        text = m if isinstance(m, str) else str(m.text)
        if any(_mentions(text, old) for old in superseded) and not any(_mentions(text, new) for new in current):
            return True
    return False


@dataclass(frozen=True)
class AnswerScore:
    """One Answer Agent reply, read by the product and scored against its gold answer."""

    text: str  # what the product uses as the answer (its last-line fallback included)
    valid: bool  # the reply had the ``**Answer:**`` marker and an answer after it
    f1: float
    em: float
    quoted_recall: float  # share of the gold's content in the memories the reply quoted (0 if none)
    quoted: int  # how many shown memories the reply quoted


def score_answer_reply(raw: str, shown: Sequence[Any], gold: Any, question: str = "") -> AnswerScore:
    """Parse ``raw`` as :meth:`AnswerAgent.read` does and score it against ``gold``."""
    answer = AnswerAgent.read(question, shown, raw or "")
    golds = list(gold) if isinstance(gold, (list, tuple)) else [gold]
    recalls = [answer_recall(str(g), answer.memories) for g in golds]
    recall = max((r for r in recalls if r is not None), default=0.0)
    return AnswerScore(text=answer.text, valid=answer.valid, f1=best_score(answer.text, golds, "f1"),
                       em=best_score(answer.text, golds, "em"), quoted_recall=recall if answer.memories else 0.0,
                       quoted=len(answer.memories))


def answer_reward(score: AnswerScore, metric: str = "f1") -> float:
    """The Answer Agent's GRPO reward: F1 (or EM) of the answer the product would use,
    minus :data:`MISSING_MARKER_PENALTY` without the marker, plus :data:`QUOTE_BONUS`
    times the gold content in the quoted memories."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    base = score.f1 if metric == "f1" else score.em
    penalty = 0.0 if score.valid else MISSING_MARKER_PENALTY
    return base - penalty + QUOTE_BONUS * score.quoted_recall
