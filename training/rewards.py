"""GRPO rewards for the Memory Manager and the Answer Agent (Memory-R1, §3).

Both follow TRL's reward contract, ``reward(completions, **kwargs) -> list[float]``:
``completions`` are strings (standard prompts) or one-message chat lists
(conversational prompts, TRL 1.x), and every other dataset column arrives as
a keyword list aligned with ``completions``.

* :class:`AnswerReward`: exact match (default) or token-F1 of the text after
  ``**Answer:**`` against the gold ``answer`` column. No marker -> 0.0, counted.
* :class:`ManagerReward`: parse the sampled operations, apply them to a copy
  of the bank the prompt was built from, let the *frozen* Answer Agent answer
  the linked questions from that copy, reward = mean EM (or F1) over them.
  Unparseable output (including hallucinated ids) -> 0.0, counted; it is never
  treated as NOOP, which would reward a model for emitting garbage whenever
  NOOP happens to be right.

Exact match is the default because Memory-R1 found it beats an LLM-judge
reward, which taught the answer agent to be wordy.

Each reward owns an :class:`OutputCounter` (valid/invalid completions) that
the metrics callback reads for the valid-output rate; the rate is also sent
through TRL's ``log_metric`` hook when the trainer provides it, so it lands
in the trainer's own logs as ``valid_rate/<reward name>``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from memory_agent.errors import InvalidModelOutput
from memory_agent.llms.base import LLM
from training.bank import BankCache, SnapshotBank
from training import pipeline

__all__ = [
    "METRICS",
    "OutputCounter",
    "completion_text",
    "score_answer",
    "AnswerReward",
    "ManagerReward",
    "answer_em_reward",
    "answer_f1_reward",
]

METRICS = ("em", "f1")


class OutputCounter:
    """Counts valid and invalid completions; thread-safe, cheap.

    ``window()`` returns the rate since the previous ``window()`` call, which
    is what a per-step log wants; ``rate`` is the rate over the whole run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.valid = 0
        self.invalid = 0
        self._w_valid = 0
        self._w_invalid = 0
        self.last_invalid: str | None = None  # one example, for debugging logs

    def record(self, ok: bool, raw: str | None = None) -> None:
        with self._lock:
            if ok:
                self.valid += 1
                self._w_valid += 1
            else:
                self.invalid += 1
                self._w_invalid += 1
                self.last_invalid = raw

    @property
    def total(self) -> int:
        return self.valid + self.invalid

    @property
    def rate(self) -> float | None:
        return self.valid / self.total if self.total else None

    def window(self) -> float | None:
        with self._lock:
            n = self._w_valid + self._w_invalid
            rate = self._w_valid / n if n else None
            self._w_valid = self._w_invalid = 0
        return rate

    def reset(self) -> None:
        with self._lock:
            self.valid = self.invalid = self._w_valid = self._w_invalid = 0
            self.last_invalid = None

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "invalid": self.invalid, "rate": self.rate}


def completion_text(completion: Any) -> str:
    """A completion as plain text, whichever form TRL passes.

    ``"text"`` -> itself; ``[{"role": "assistant", "content": "text"}]`` -> the
    assistant contents joined (TRL 1.x conversational form); a single message
    dict -> its content.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
        return content if isinstance(content, str) else str(content)
    if isinstance(completion, Sequence):
        parts = [
            completion_text(m)
            for m in completion
            if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"
        ]
        return "\n".join(p for p in parts if p)
    return str(completion)


def _golds(gold: Any) -> list[str]:
    """A gold answer column value -> the list of acceptable answers."""
    if gold is None:
        return []
    if isinstance(gold, (list, tuple)):
        return [str(g) for g in gold if g is not None]
    return [str(gold)]


def score_answer(pred: str, gold: Any, metric: str = "em") -> float:
    """Best score of ``pred`` over the acceptable gold answers (``em`` or ``f1``)."""
    from eval.metrics import exact_match, token_f1

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    fn = exact_match if metric == "em" else token_f1
    golds = _golds(gold)
    if not golds:
        return 0.0
    return max(float(fn(pred, g)) for g in golds)


def _log_rate(kwargs: dict, name: str, ok: list[bool]) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric) and ok:
        log_metric(f"valid_rate/{name}", sum(ok) / len(ok))


class AnswerReward:
    """Reward of the Answer Agent: EM/F1 of the text after ``**Answer:**``.

    Expects the dataset column ``answer`` (the gold answer; a list means any
    of them is accepted).
    """

    def __init__(self, metric: str = "em", counter: OutputCounter | None = None, name: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        self.counter = counter if counter is not None else OutputCounter()
        self.__name__ = name or f"answer_{metric}"

    def __call__(self, completions: list[Any], answer: list[Any] | None = None, **kwargs: Any) -> list[float]:
        if answer is None:
            raise ValueError(f"{self.__name__} needs the dataset column 'answer' (the gold answers)")
        rewards: list[float] = []
        ok: list[bool] = []
        for completion, gold in zip(completions, answer, strict=True):
            text = completion_text(completion)
            pred = pipeline.parse_answer(text)
            self.counter.record(pred is not None, text)
            ok.append(pred is not None)
            rewards.append(0.0 if pred is None else score_answer(pred, gold, self.metric))
        _log_rate(kwargs, self.__name__, ok)
        return rewards


def answer_em_reward(completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """Module-level EM reward (its own counter is :data:`answer_em_reward.counter`)."""
    return _ANSWER_EM(completions, answer=answer, **kwargs)


def answer_f1_reward(completions: list[Any], answer: list[Any], **kwargs: Any) -> list[float]:
    """Module-level token-F1 reward (partial credit)."""
    return _ANSWER_F1(completions, answer=answer, **kwargs)


_ANSWER_EM = AnswerReward("em")
_ANSWER_F1 = AnswerReward("f1")
answer_em_reward.counter = _ANSWER_EM.counter  # type: ignore[attr-defined]
answer_f1_reward.counter = _ANSWER_F1.counter  # type: ignore[attr-defined]


def _as_list(value: Any) -> list:
    """A column value that may have been JSON-encoded (``questions``/``answers``/``shown``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(json.loads(value))
    return list(value)


class ManagerReward:
    """Reward of the Memory Manager: how well the frozen Answer Agent answers after the ops.

    Dataset columns used (see :mod:`training.episodes`): ``shown`` (JSON list
    of the memories shown to the manager, ``{"id", "text"}`` in prompt order:
    small id ``i`` is ``shown[i]``), ``bank`` (JSON snapshot of the whole bank
    before the turn), ``questions`` and ``answers`` (the QA pairs whose
    evidence includes the turn) and optionally ``timestamp`` and ``speaker``
    (given to the memories the completion ADDs, as the pipeline does).

    All questions of all valid completions in a batch go to the answer LLM in
    one ``generate`` call, so a batched backend pays one forward pass per step.
    """

    def __init__(
        self,
        answer_llm: LLM,
        *,
        embedder: Any = None,
        metric: str = "em",
        top_k: int = pipeline.ANSWER_K,
        max_new_tokens: int = pipeline.ANSWER_MAX_NEW_TOKENS,
        counter: OutputCounter | None = None,
        name: str | None = None,
    ):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if embedder is None:
            from memory_store import HashingEmbedder

            embedder = HashingEmbedder(dim=384)
        self.answer_llm = answer_llm
        self.metric = metric
        self.top_k = top_k
        self.max_new_tokens = max_new_tokens
        self.counter = counter if counter is not None else OutputCounter()
        self.answer_counter = OutputCounter()  # frozen agent's missing markers (diagnostic only)
        self.banks = BankCache(embedder)
        self.__name__ = name or f"manager_{metric}"
        # (completion index, prediction, gold) of the last call, so a caller can score
        # the same answers with another metric without asking the answer model again.
        self.last_answers: list[tuple[int, str, Any]] = []

    def apply(
        self, text: str, shown: list[dict], base: SnapshotBank, timestamp: str | None, speaker: str | None = None,
        facts: list[str] | None = None,
    ) -> SnapshotBank:
        """Parse ``text`` (and, given ``facts``, check it is grounded as the pipeline does) and
        apply it to a copy of ``base``; raises InvalidModelOutput."""
        ops = pipeline.parse_manager_ops(text, len(shown), facts, shown)
        bank = base.copy()
        pipeline.apply_manager_ops(bank, ops, [int(m["id"]) for m in shown], timestamp or None, speaker or None)
        return bank

    def __call__(
        self,
        completions: list[Any],
        shown: list[Any] | None = None,
        bank: list[Any] | None = None,
        questions: list[Any] | None = None,
        answers: list[Any] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        for col, value in (("shown", shown), ("bank", bank), ("questions", questions), ("answers", answers)):
            if value is None:
                raise ValueError(f"{self.__name__} needs the dataset column {col!r}")
        timestamps = kwargs.get("timestamp") or [None] * len(completions)
        speakers = kwargs.get("speaker") or [None] * len(completions)
        facts = kwargs.get("facts") or [None] * len(completions)
        rewards = [0.0] * len(completions)
        ok: list[bool] = []
        batch: list[list[dict[str, str]]] = []
        owners: list[tuple[int, Any]] = []  # (completion index, gold) per batch row
        n_questions = [0] * len(completions)
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            shown_i = _as_list(shown[i])
            try:
                facts_i = _as_list(facts[i]) if facts[i] is not None else None
                after = self.apply(text, shown_i, self.banks.get(bank[i]), timestamps[i], speakers[i], facts_i)
            except InvalidModelOutput:
                self.counter.record(False, text)
                ok.append(False)
                continue
            self.counter.record(True, text)
            ok.append(True)
            for question, gold in zip(_as_list(questions[i]), _as_list(answers[i]), strict=True):
                memories = pipeline.answer_retrieve(after, question, self.top_k)
                batch.append(pipeline.answer_messages(question, memories, llm=self.answer_llm))
                owners.append((i, gold))
                n_questions[i] += 1
        self.last_answers = []
        if batch:
            replies = self.answer_llm.generate(batch, max_new_tokens=self.max_new_tokens, temperature=0.0)
            for (i, gold), reply in zip(owners, replies, strict=True):
                # Score what the pipeline would use as the answer (its fallback included):
                # the manager is judged here, not the frozen agent's formatting.
                pred, valid = pipeline.answer_text(reply)
                self.answer_counter.record(valid, reply)
                self.last_answers.append((i, pred, gold))
                rewards[i] += score_answer(pred, gold, self.metric) / n_questions[i]
        _log_rate(kwargs, self.__name__, ok)
        return rewards
