"""GRPO rewards of the Memory Manager and the Answer Agent (TRL's reward contract).

Both are ``reward(completions, episode_id, **kwargs) -> list[float]``: the
dataset carries the prompt and an ``episode_id``; the episode
(:mod:`training.episodes`) holds what the prompt was built from.

**Manager** (:class:`ManagerScorer`, dense, no LLM call). A completion is read
by the product (:meth:`MemoryManager.decide`: stop string, parser, grounding)
and applied by the product (:meth:`MemoryManager.apply_decision`) to a fork
of the episode's bank. Then, with the Answer Agent's own retrieval and token
budget (:meth:`AnswerAgent.prompt`, the product's k and embedder):

* **invalid** output (unparseable, ungrounded, refused by the store): ``-1``, counted;
* otherwise the mean **recall** of the linked questions' gold-answer content
  in the memories the Answer Agent would be shown after the operations,
* minus :data:`STALE_PENALTY` times the share of linked "what is X now"
  questions that are still shown a superseded value,
* minus :data:`GUARD_PENALTY` times the recall that other questions lose
  because an UPDATE/DELETE changed a memory holding their answer,
* minus :data:`LOSS_PENALTY` times the share of an UPDATEd/DELETEd memory's
  content that no memory states any more (information destroyed: without it,
  overwriting a memory no known question asks about would cost nothing, and
  the second CPU run's manager learned to UPDATE instead of ADD on LoCoMo),
* minus :data:`DUPLICATE_PENALTY` per ADD of a fact already shown, and per
  UPDATE that says nothing the memory it replaces did not (a no-op edit:
  without it, restating a repeated fact as ``UPDATE 0`` scored as well as
  NOOP, and GRPO drifted towards UPDATE on every kind of turn),
* floored at :data:`VALID_FLOOR`, so a valid decision always beats an invalid one.

Why dense: the outcome reward (did the 135M Answer Agent get the question
right?) is 0 for almost every sample, so GRPO groups had no spread and no
gradient. Recall separates ADD from NOOP, UPDATE from a stale ADD, a careful
edit from a destructive one. ``memory-agent train proxy`` measures how well it
ranks decisions the way the Answer Agent's F1 does.

**Answer** (:class:`AnswerReward`): the product's parser, then
:func:`eval.scoring.answer_reward` (F1 or EM partial credit, a penalty without
the ``**Answer:**`` marker, a bonus for quoting the memory that holds the gold).

Failures are never "nothing happened": an invalid completion is scored and
counted in :class:`RewardStats`, which the metrics callback logs per step
(valid rate, operation mix, reward components).
"""

from __future__ import annotations

import random
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.scoring import METRICS, answer_recall, answer_reward, memory_view, score_answer_reply, states_superseded
from memory_agent.answer import AnswerAgent
from memory_agent.errors import InvalidInput, InvalidModelOutput, MemoryNotFound
from memory_agent.manager import MemoryManager
from memory_agent.operations import AddOp, DeleteOp, UpdateOp
from memory_agent.text import content_stems
from training.episodes import AnswerEpisode, ManagerEpisode

__all__ = [
    "INVALID_REWARD",
    "STALE_PENALTY",
    "GUARD_PENALTY",
    "LOSS_PENALTY",
    "DUPLICATE_PENALTY",
    "VALID_FLOOR",
    "completion_text",
    "RewardStats",
    "ManagerScore",
    "ManagerScorer",
    "ManagerReward",
    "AnswerReward",
    "shuffled_within_groups",
]

INVALID_REWARD = -1.0
STALE_PENALTY = 0.5
GUARD_PENALTY = 0.5
LOSS_PENALTY = 0.5
DUPLICATE_PENALTY = 0.1
VALID_FLOOR = -0.9


def completion_text(completion: Any) -> str:
    """A completion as plain text, whichever form TRL passes (string or chat messages)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
        return content if isinstance(content, str) else str(content)
    if isinstance(completion, Sequence):
        parts = [completion_text(m) for m in completion
                 if not isinstance(m, dict) or m.get("role", "assistant") == "assistant"]
        return "\n".join(p for p in parts if p)
    return str(completion)


class RewardStats:
    """Per-completion values a reward records; ``window()`` gives the means since the last call.

    Thread-safe. ``valid_rate`` is always present; the other keys are
    whatever the reward records (operation mix, reward components).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: list[dict[str, float]] = []
        self.valid = 0
        self.invalid = 0
        self.last_invalid: str | None = None

    def record(self, valid: bool, raw: str | None = None, **values: float | None) -> None:
        with self._lock:
            self._window.append({"valid_rate": float(valid), **{k: float(v) for k, v in values.items() if v is not None}})
            if valid:
                self.valid += 1
            else:
                self.invalid += 1
                self.last_invalid = raw

    @property
    def total(self) -> int:
        return self.valid + self.invalid

    @property
    def rate(self) -> float | None:
        return self.valid / self.total if self.total else None

    def window(self) -> dict[str, float]:
        with self._lock:
            rows, self._window = self._window, []
        keys = sorted({k for r in rows for k in r})
        return {k: statistics.fmean(r[k] for r in rows if k in r) for k in keys}

    def as_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "invalid": self.invalid, "rate": self.rate}


# ------------------------------------------------------------------ Memory Manager
@dataclass(frozen=True)
class ManagerScore:
    """One manager completion, decided and applied by the product, then scored."""

    reward: float
    valid: bool
    ops: tuple[str, ...] = ()  # kinds of the decided operations (NOOP alone for a no-op)
    edits: tuple[tuple[str, int], ...] = ()  # (UPDATE|DELETE, small id) of the decision
    recall: float | None = None
    stale: float | None = None
    guard: float = 0.0
    lost: float = 0.0  # mean share of the changed memories' content gone from the bank
    duplicates: int = 0  # ADDs of a shown fact + UPDATEs that say nothing new
    error: str | None = None


@dataclass
class ManagerScorer:
    """The dense manager reward of one completion (see the module docstring)."""

    count_tokens: Callable[[str], int] | None = None  # the Answer Agent's token counter (its budget)
    stale_penalty: float = STALE_PENALTY
    guard_penalty: float = GUARD_PENALTY
    loss_penalty: float = LOSS_PENALTY
    duplicate_penalty: float = DUPLICATE_PENALTY
    _before: dict[tuple[int, str], float | None] = field(default_factory=dict, repr=False)

    def shown(self, store: Any, user_id: str, question: str) -> list[Any]:
        """The memories the Answer Agent's prompt for ``question`` shows, on ``store``."""
        return AnswerAgent(None, store, count_tokens=self.count_tokens).prompt(question, user_id)[1]

    @staticmethod
    def apply(episode: ManagerEpisode, raw: str) -> tuple[list[Any], Any, list[Any]]:
        """The product's reading of ``raw`` applied to a fork of the episode's bank:
        ``(ops, bank after, applied)``; raises ``InvalidModelOutput`` for an invalid decision."""
        ops = MemoryManager.decide(episode.item, episode.hits, raw)
        after = episode.store.fork()
        try:
            applied = MemoryManager(None, after).apply_decision(episode.item, ops, episode.hits, episode.user_id)
        except (MemoryNotFound, InvalidInput) as exc:
            raise InvalidModelOutput(f"the store refused the decision: {exc}", raw) from exc
        return ops, after, applied

    def score(self, episode: ManagerEpisode, raw: str) -> ManagerScore:
        try:
            ops, after, applied = self.apply(episode, raw)
        except InvalidModelOutput as exc:
            return ManagerScore(INVALID_REWARD, False, error=exc.args[0])
        kinds = tuple(dict.fromkeys(op.op for op in ops))
        edits = tuple((op.op, op.id) for op in ops if isinstance(op, (UpdateOp, DeleteOp)))
        recalls, stale = [], []
        for qa in episode.questions:
            shown = self.shown(after, episode.user_id, qa.question)
            r = answer_recall(qa.answer, shown)
            if r is not None:
                recalls.append(r)
            if qa.superseded_values:
                stale.append(float(states_superseded(qa.superseded_values, qa.current_values, shown)))
        changed = [a for a in applied if a.op in ("UPDATE", "DELETE")]
        guard = self._guard_loss(episode, after, changed)
        lost = _lost_content(changed, after, episode.user_id)
        dups = sum(_duplicate(op.text, episode.hits) for op in ops if isinstance(op, AddOp))
        dups += sum(_says_nothing_new(a) for a in applied if a.op == "UPDATE")
        recall = statistics.fmean(recalls) if recalls else None
        stale_share = statistics.fmean(stale) if stale else None
        reward = ((recall or 0.0) - self.stale_penalty * (stale_share or 0.0) - self.guard_penalty * guard
                  - self.loss_penalty * lost - self.duplicate_penalty * dups)
        return ManagerScore(max(VALID_FLOOR, min(1.0, reward)), True, kinds, edits, recall, stale_share, guard,
                            lost, dups)

    def _guard_loss(self, episode: ManagerEpisode, after: Any, changed: Sequence[Any]) -> float:
        """Mean recall lost by the other questions whose answer was in a changed memory."""
        if not changed:
            return 0.0
        old_views = [memory_view(episode.store.get(a.id, episode.user_id)) for a in changed]
        losses = []
        for qa in episode.guards:
            touched = answer_recall(qa.answer, old_views)
            if not touched:
                continue
            key = (episode.id, qa.question)
            if key not in self._before:  # the same for every completion of the episode
                self._before[key] = answer_recall(qa.answer, self.shown(episode.store, episode.user_id, qa.question))
            before = self._before[key] or 0.0
            now = answer_recall(qa.answer, self.shown(after, episode.user_id, qa.question)) or 0.0
            losses.append(max(0.0, before - now))
        return statistics.fmean(losses) if losses else 0.0


def _lost_content(changed: Sequence[Any], after: Any, user_id: str) -> float:
    """Mean share of each UPDATEd/DELETEd memory's content stems that no memory of the bank states any more."""
    if not changed:
        return 0.0
    kept: set[str] = set()
    for record in after.list(user_id):
        kept |= content_stems(record.text)
    shares = []
    for a in changed:
        old = content_stems(a.old_text or "")
        if old:
            shares.append(len(old - kept) / len(old))
    return statistics.fmean(shares) if shares else 0.0


def _duplicate(text: str, hits: Sequence[Any]) -> bool:
    """An ADD that says nothing a shown memory does not already say."""
    new = content_stems(text)
    key = text.casefold().strip()
    return any(h.text.casefold().strip() == key or (new and new <= content_stems(h.text)) for h in hits)


def _says_nothing_new(applied: Any) -> bool:
    """An UPDATE whose text adds no content word to the memory it replaced."""
    new = content_stems(applied.new_text or "")
    return not new or new <= content_stems(applied.old_text or "")


def _log(kwargs: dict, name: str, values: dict[str, float]) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        for key, value in values.items():
            log_metric(f"{name}/{key}", value)


class ManagerReward:
    """TRL reward of the Memory Manager over :class:`ManagerEpisode` s (by ``episode_id``)."""

    def __init__(self, episodes: Sequence[ManagerEpisode], scorer: ManagerScorer | None = None, *,
                 stats: RewardStats | None = None, name: str = "manager_dense"):
        self.episodes = {e.id: e for e in episodes}
        self.scorer = scorer if scorer is not None else ManagerScorer()
        self.stats = stats if stats is not None else RewardStats()
        self.__name__ = name

    def __call__(self, completions: list[Any], episode_id: list[int] | None = None, **kwargs: Any) -> list[float]:
        if episode_id is None:
            raise ValueError(f"{self.__name__} needs the dataset column 'episode_id'")
        scores = []
        for completion, eid in zip(completions, episode_id, strict=True):
            text = completion_text(completion)
            s = self.scorer.score(self.episodes[int(eid)], text)
            scores.append(s)
            self.stats.record(s.valid, text, **{f"ops_{k.lower()}": float(k in s.ops) for k in ("ADD", "UPDATE", "DELETE", "NOOP")},
                              recall=s.recall, stale=s.stale, guard=s.guard if s.valid else None,
                              lost=s.lost if s.valid else None,
                              duplicates=s.duplicates if s.valid else None)
        _log(kwargs, self.__name__, {"valid_rate": sum(s.valid for s in scores) / max(1, len(scores))})
        return [s.reward for s in scores]


# ------------------------------------------------------------------ Answer Agent
class AnswerReward:
    """TRL reward of the Answer Agent over :class:`AnswerEpisode` s (by ``episode_id``)."""

    def __init__(self, episodes: Sequence[AnswerEpisode], metric: str = "f1", *,
                 stats: RewardStats | None = None, name: str | None = None):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.episodes = {e.id: e for e in episodes}
        self.metric = metric
        self.stats = stats if stats is not None else RewardStats()
        self.__name__ = name or f"answer_{metric}"

    def __call__(self, completions: list[Any], episode_id: list[int] | None = None, **kwargs: Any) -> list[float]:
        if episode_id is None:
            raise ValueError(f"{self.__name__} needs the dataset column 'episode_id'")
        rewards, valid = [], 0
        for completion, eid in zip(completions, episode_id, strict=True):
            ep = self.episodes[int(eid)]
            text = completion_text(completion)
            s = score_answer_reply(text, ep.shown, ep.qa.answer, ep.qa.question)
            self.stats.record(s.valid, text, f1=s.f1, em=s.em, quoted_recall=s.quoted_recall)
            valid += s.valid
            rewards.append(answer_reward(s, self.metric))
        _log(kwargs, self.__name__, {"valid_rate": valid / max(1, len(rewards))})
        return rewards


def shuffled_within_groups(reward: Callable[..., list[float]], group_size: int, seed: int = 0) -> Callable[..., list[float]]:
    """A control: ``reward`` with its values permuted inside each group of ``group_size``.

    TRL lays a generation batch out as consecutive groups of one prompt's
    completions, so this keeps each group's reward distribution and destroys
    which completion earned what. A policy trained on it must not improve.
    """
    rng = random.Random(seed)

    def shuffled(completions: list[Any], **kwargs: Any) -> list[float]:
        values = list(reward(completions, **kwargs))
        if len(values) % group_size:
            raise ValueError(f"{len(values)} rewards do not split into groups of {group_size}")
        out: list[float] = []
        for start in range(0, len(values), group_size):
            group = values[start : start + group_size]
            rng.shuffle(group)
            out.extend(group)
        return out

    shuffled.__name__ = f"{getattr(reward, '__name__', 'reward')}_shuffled"
    return shuffled
