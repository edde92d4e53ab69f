"""Answer-quality metrics: small pure functions, also used as GRPO rewards.

Two F1 definitions circulate for LoCoMo and they give different numbers, so
both are here and every report says which one it used:

* :func:`token_f1` ("mem0"): the Mem0 / Memory-R1 harness. Lower-case, replace
  ``. , ! ?`` with spaces, split on whitespace, F1 over token *sets*.
* :func:`locomo_f1` ("locomo"): the LoCoMo paper's scorer. Lower-case, drop
  punctuation and the words a/an/the/and (the released code's article regex
  includes "and"), Porter-stem, F1 over token *multisets*; multi-hop answers
  (category 1) are split on commas and each gold part takes its best match
  among the predicted parts, then the mean; open-domain (3) gold keeps the text
  before the first ";"; adversarial (5) scores 1 when the prediction says the
  information is not mentioned / not available.

:func:`bleu1` is nltk's sentence BLEU with unigram weights and smoothing
method 1, on the Mem0 F1 tokenisation (``str.split`` after the punctuation
rule above). Mem0's own script tokenises BLEU with punkt's ``word_tokenize``;
we do not, so no nltk data download is ever needed. The two differ only in how
punctuation other than ``.,!?`` (apostrophes, quotes) is split.
All scores are fractions in [0, 1]; reports multiply by 100.

:func:`judge` asks an LLM whether a prediction is CORRECT or WRONG, with a
deliberately generous rubric (same meaning counts; any format of the same
date counts). Its output is parsed strictly: anything but
``{"label": "CORRECT"|"WRONG"}`` raises :class:`InvalidModelOutput`, which the
harness counts instead of silently scoring WRONG.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

from nltk.stem import PorterStemmer
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from memory_agent.errors import InvalidModelOutput

__all__ = [
    "F1_KINDS",
    "mem0_tokens",
    "token_f1",
    "bleu1",
    "locomo_normalize",
    "locomo_token_f1",
    "locomo_f1",
    "exact_match",
    "f1_for",
    "JUDGE_SYSTEM",
    "judge_messages",
    "parse_judge_label",
    "judge",
    "judge_many",
]


# --------------------------------------------------------------- Mem0 style


def mem0_tokens(text: str) -> list[str]:
    """The Mem0 harness tokeniser: lower-case, ``.,!?`` -> space, whitespace split."""
    text = str(text).lower()
    for ch in ".,!?":
        text = text.replace(ch, " ")
    return text.split()


def token_f1(pred: str, gold: str) -> float:
    """F1 over token sets (Mem0 / Memory-R1). 0.0 when either side has no tokens."""
    p, g = set(mem0_tokens(pred)), set(mem0_tokens(gold))
    common = len(p & g)
    if not p or not g or common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


_SMOOTH = SmoothingFunction().method1


def bleu1(pred: str, gold: str) -> float:
    """Unigram BLEU: nltk ``sentence_bleu([gold], pred, (1,0,0,0), method1)``."""
    p, g = mem0_tokens(pred), mem0_tokens(gold)
    if not p or not g:
        return 0.0
    return float(sentence_bleu([g], p, weights=(1, 0, 0, 0), smoothing_function=_SMOOTH))


# ------------------------------------------------------------- LoCoMo style

_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_STEMMER = PorterStemmer()


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


def locomo_normalize(text: str) -> str:
    """LoCoMo's ``normalize_answer``: lower, no punctuation, no a/an/the/and, single spaces."""
    text = str(text).replace(",", "").lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def locomo_token_f1(pred: str, gold: str) -> float:
    """LoCoMo's single-answer F1: stemmed tokens, multiset overlap."""
    p = [_stem(w) for w in locomo_normalize(pred).split()]
    g = [_stem(w) for w in locomo_normalize(gold).split()]
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _multi_hop_f1(pred: str, gold: str) -> float:
    preds = [p.strip() for p in str(pred).split(",")]
    golds = [g.strip() for g in str(gold).split(",")]
    return sum(max(locomo_token_f1(p, g) for p in preds) for g in golds) / len(golds)


def locomo_f1(pred: str, gold: str, category: int = 4) -> float:
    """The LoCoMo paper's F1 for a question of ``category`` (see module docstring)."""
    if category == 1:
        return _multi_hop_f1(pred, gold)
    if category == 3:
        gold = str(gold).split(";")[0].strip()
    if category == 5:
        low = str(pred).lower()
        return 1.0 if ("no information available" in low or "not mentioned" in low) else 0.0
    return locomo_token_f1(pred, gold)


def exact_match(pred: str, gold: str) -> float:
    """1.0 when both normalise (LoCoMo normalisation, no stemming) to the same text."""
    return 1.0 if locomo_normalize(pred) == locomo_normalize(gold) else 0.0


F1_KINDS = ("mem0", "locomo")


def f1_for(kind: str) -> Callable[[str, str, int], float]:
    """``(pred, gold, category) -> float`` for ``--f1 mem0|locomo``."""
    if kind == "mem0":
        return lambda pred, gold, category=4: token_f1(pred, gold)
    if kind == "locomo":
        return locomo_f1
    raise ValueError(f"unknown F1 kind {kind!r}; choose from {', '.join(F1_KINDS)}")


# ---------------------------------------------------------------- LLM judge


class _LLM(Protocol):  # the memory_agent.llms.LLM protocol, restated to stay import-light
    def generate(self, batch: list[list[dict[str, str]]], *, max_new_tokens: int = 256,
                 temperature: float = 0.0, stop: list[str] | None = None) -> list[str]: ...


JUDGE_SYSTEM = (
    "You grade answers to questions about a long conversation. You see the question, "
    "the gold answer and a candidate answer. Be generous: the candidate is CORRECT when it "
    "refers to the same thing as the gold answer, even if it is longer, worded differently, "
    "or adds harmless detail. For dates and times, any format that points to the same date "
    "or period is CORRECT (\"7 May 2023\", \"May 7th\", \"the Sunday before 8 May 2023\"). "
    "It is WRONG when it names something else, misses the point, or says it does not know. "
    'Reply with JSON only: {"label": "CORRECT"} or {"label": "WRONG"}.'
)


def judge_messages(question: str, gold: str, pred: str) -> list[dict[str, str]]:
    """The chat messages sent to the judge model for one answer."""
    user = f"Question: {question}\nGold answer: {gold}\nCandidate answer: {pred}\nLabel:"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def parse_judge_label(raw: str) -> bool:
    """``{"label": "CORRECT"}`` -> True, ``{"label": "WRONG"}`` -> False.

    One JSON object (optionally in a ``` fence) with exactly the key ``label``;
    anything else raises :class:`InvalidModelOutput`.
    """
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidModelOutput("judge output is not JSON", raw) from exc
    if not isinstance(obj, dict) or set(obj) != {"label"}:
        raise InvalidModelOutput('judge output must be {"label": ...}', raw)
    label = obj["label"]
    if label == "CORRECT":
        return True
    if label == "WRONG":
        return False
    raise InvalidModelOutput("judge label must be CORRECT or WRONG", raw)


def judge(question: str, gold: str, pred: str, llm: _LLM) -> bool:
    """Ask ``llm`` whether ``pred`` answers ``question`` like ``gold``. Strict parsing."""
    (raw,) = llm.generate([judge_messages(question, gold, pred)], max_new_tokens=24, temperature=0.0)
    return parse_judge_label(raw)


def judge_many(items: list[tuple[str, str, str]], llm: _LLM) -> list[bool | None]:
    """Judge ``(question, gold, pred)`` triples in one batch; ``None`` marks invalid output."""
    if not items:
        return []
    raws = llm.generate([judge_messages(q, g, p) for q, g, p in items], max_new_tokens=24, temperature=0.0)
    out: list[bool | None] = []
    for raw in raws:
        try:
            out.append(parse_judge_label(raw))
        except InvalidModelOutput:
            out.append(None)
    return out
