"""Training episodes for the two agents, built with the product's own code.

A conversation is replayed turn by turn into an
:class:`~memory_store.InMemoryStore` by the product's
:class:`~memory_agent.manager.MemoryManager` (retrieval, prompt, applying
operations) and :class:`~memory_agent.answer.AnswerAgent` (retrieval, token
budget, display order). Nothing here re-implements a pipeline step:

* a **manager episode** is one turn with facts whose memory the manager is
  shown (``MemoryManager.retrieve``): the turn, the shown memories, a
  copy-on-write fork of the bank before the turn, the questions linked to the
  turn and the gold decision when the data knows it (synthetic edits; for
  LoCoMo observations: ADD what is not stored verbatim);
* an **answer episode** is one question over the final bank: the Answer
  Agent's exact prompt and the memories in it.

How the earlier turns become the bank is a :class:`Replay`: ``gold`` (the
data's own facts and edits: LoCoMo observations, the synthetic world's
ADD/UPDATE/DELETE/NOOP), ``turns`` (each turn verbatim) or ``pipeline`` (the
product's extraction and a given manager model, as in deployment).

Episodes are Python objects, not dataset columns: the GRPO dataset carries
the prompt and an ``episode_id``, and the rewards look the episode up.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from data.schema import QA, Conversation
from data.specs import load_spec
from memory_agent.answer import AnswerAgent
from memory_agent.errors import ConfigError
from memory_agent.manager import Decision, MemoryManager, TurnFacts
from memory_agent.operations import AddOp, DeleteOp, NoopOp, UpdateOp, format_operations
from memory_agent.prompts import Messages, format_turn
from memory_store import InMemoryStore

__all__ = [
    "FORBIDDEN_TRAIN_IDS",
    "load_conversations",
    "check_not_dev",
    "ManagerEpisode",
    "AnswerEpisode",
    "Replay",
    "GoldReplay",
    "TurnsReplay",
    "PipelineReplay",
    "REPLAYS",
    "manager_episodes",
    "answer_episodes",
    "split_episodes",
    "balanced",
    "to_dataset",
]

#: LoCoMo's development test conversation: never trained or tuned on.
FORBIDDEN_TRAIN_IDS = frozenset({"conv-41"})


def load_conversations(spec: Any) -> list[Conversation]:
    """A dataset spec (:mod:`data.specs`); ``None`` is the LoCoMo train split (conv-26)."""
    return load_spec("locomo:train" if spec is None else spec)


def check_not_dev(conversations: Sequence[Conversation]) -> None:
    """Refuse to train or validate on the development test conversation (conv-41)."""
    bad = sorted({c.sample_id for c in conversations} & FORBIDDEN_TRAIN_IDS)
    if bad:
        raise ConfigError(f"refusing to train on {', '.join(bad)}: it is the held-out development test set")


@dataclass
class ManagerEpisode:
    """One manager decision to learn, with everything its reward needs."""

    id: int
    conversation_id: str
    user_id: str
    item: TurnFacts
    store: InMemoryStore  # the bank before the turn (a fork: never written)
    hits: list[Any]  # the shown memories, in prompt order (small id i = hits[i])
    questions: list[QA]  # linked: their evidence is this turn (or the memory it edits)
    guards: list[QA]  # the conversation's other questions (an edit must not destroy their answers)
    gold: Decision | None = None  # the perfect decision in the prompt's small ids, when the data knows it

    @property
    def messages(self) -> Messages:
        return MemoryManager.messages(self.item, self.hits)

    @property
    def kind(self) -> str:
        """``change`` (gold UPDATEs/DELETEs), ``repeat`` (gold NOOP), ``new`` (ADDs) or ``unknown``."""
        if self.gold is None:
            return "unknown"
        if any(isinstance(op, (UpdateOp, DeleteOp)) for op in self.gold):
            return "change"
        if all(isinstance(op, NoopOp) for op in self.gold):
            return "repeat"
        return "new"

    def target(self) -> str | None:
        """The gold decision as the completion the manager should write."""
        return None if self.gold is None else format_operations(self.gold)


@dataclass
class AnswerEpisode:
    """One question over a conversation's final bank, as the Answer Agent sees it."""

    id: int
    conversation_id: str
    qa: QA
    messages: Messages
    shown: list[Any]  # memories in the prompt, in display order (prompt number i = shown[i])

    @property
    def kind(self) -> str:
        """Answer episodes have one kind (``kind_weights`` name the manager's kinds only)."""
        return "answer"


@dataclass
class _Bank:
    """The live bank of one replayed conversation."""

    conv: Conversation
    store: InMemoryStore
    manager: MemoryManager
    sources: dict[str, int] = field(default_factory=dict)  # dia_id -> id of the memory its fact became

    @property
    def user_id(self) -> str:
        return self.conv.sample_id


class Replay(Protocol):
    """How a conversation's turns become facts and the bank."""

    name: str

    def facts(self, conv: Conversation) -> dict[str, tuple[str, ...]]:
        """dia_id -> the turn's facts, as the manager will see them."""
        ...

    def advance(self, bank: _Bank, item: TurnFacts, hits: list[Any]) -> Decision | None:
        """Apply the turn to the bank; returns the gold decision in ``hits``' small ids, if known."""
        ...


def _apply(bank: _Bank, item: TurnFacts, ops: Decision, hits: list[Any]) -> None:
    """Apply through the product's ``MemoryManager.apply_decision``; remember which memory each fact became."""
    applied = bank.manager.apply_decision(item, ops, hits, bank.user_id)
    for a in applied:
        if a.op in ("ADD", "UPDATE") and item.dia_id:
            bank.sources[item.dia_id] = a.id
        elif a.op == "DELETE":
            bank.sources = {k: v for k, v in bank.sources.items() if v != a.id}


def _unknown_duplicates(facts: Sequence[str], hits: Sequence[Any]) -> Decision:
    """ADD every fact not already stored verbatim (NOOP when none is new)."""
    known = {h.text.casefold().strip() for h in hits}
    ops: Decision = [AddOp(text=f) for f in dict.fromkeys(facts) if f.casefold().strip() not in known]
    return ops or [NoopOp()]


class GoldReplay:
    """The data's own facts (LoCoMo observations) and edits (the synthetic world's)."""

    name = "gold"

    def facts(self, conv: Conversation) -> dict[str, tuple[str, ...]]:
        return {dia: tuple(f for _s, f in pairs) for dia, pairs in conv.observations.items() if pairs}

    def advance(self, bank: _Bank, item: TurnFacts, hits: list[Any]) -> Decision:
        edits = bank.conv.edits.get(item.dia_id or "")
        if not edits:
            gold = _unknown_duplicates(item.facts, hits)
            _apply(bank, item, gold, hits)
            return gold
        gold: Decision = []
        apply_ops: Decision = []
        extended = list(hits)  # the bank is kept right even when the edited memory was not shown
        for edit in edits:
            if edit.op == "ADD":
                gold.append(AddOp(text=edit.text))
                apply_ops.append(AddOp(text=edit.text))
                continue
            mid = bank.sources.get(edit.target or "")
            if edit.op == "NOOP" or (mid is None and edit.op == "DELETE"):
                continue
            if mid is None:  # the memory it would change is gone: file the fact as new
                gold.append(AddOp(text=edit.text))
                apply_ops.append(AddOp(text=edit.text))
                continue
            shown = next((i for i, h in enumerate(hits) if h.id == mid), None)
            if shown is None:
                extended.append(bank.store.get(mid, bank.user_id))
            small = shown if shown is not None else len(extended) - 1
            if edit.op == "UPDATE":
                # Not shown, the manager cannot UPDATE it: for the prompt, the right move is to ADD.
                gold.append(UpdateOp(id=small, text=edit.text) if shown is not None else AddOp(text=edit.text))
                apply_ops.append(UpdateOp(id=small, text=edit.text))
            else:
                if shown is not None:
                    gold.append(DeleteOp(id=small))
                apply_ops.append(DeleteOp(id=small))
        _apply(bank, item, apply_ops or [NoopOp()], extended)
        return gold or [NoopOp()]


class TurnsReplay:
    """Each turn verbatim (``Speaker: text``) is its fact; ADDed unless already stored."""

    name = "turns"

    def facts(self, conv: Conversation) -> dict[str, tuple[str, ...]]:
        return {t.dia_id: (format_turn(t.speaker, t.text, t.blip_caption),) for _s, t in conv.turns() if t.text.strip()}

    def advance(self, bank: _Bank, item: TurnFacts, hits: list[Any]) -> Decision:
        gold = _unknown_duplicates(item.facts, hits)
        _apply(bank, item, gold, hits)
        return gold


class PipelineReplay:
    """The product's extraction and a given Memory Manager, as in deployment (gold unknown)."""

    name = "pipeline"

    def __init__(self, extract_llm: Any, manager_llm: Any):
        self.extract_llm = extract_llm
        self.manager_llm = manager_llm
        self._facts: dict[str, dict[str, tuple[str, ...]]] = {}

    def facts(self, conv: Conversation) -> dict[str, tuple[str, ...]]:
        from memory_agent.extraction import Turn, extract_facts

        if conv.sample_id not in self._facts:
            turns = [Turn(t.speaker, t.text, t.dia_id, t.blip_caption, s.timestamp)
                     for s, t in conv.turns() if t.text.strip()]
            outcome = extract_facts(self.extract_llm, turns)  # one batched call for the conversation
            self._facts[conv.sample_id] = {t.dia_id: tuple(f.text for f in fs)
                                           for t, fs in zip(turns, outcome.facts) if fs}
        return self._facts[conv.sample_id]

    def advance(self, bank: _Bank, item: TurnFacts, hits: list[Any]) -> None:
        MemoryManager(self.manager_llm, bank.store).manage([item], bank.user_id)
        return None


#: CLI name -> replay class (``pipeline`` needs models: built by the training run).
REPLAYS: dict[str, type] = {"gold": GoldReplay, "turns": TurnsReplay, "pipeline": PipelineReplay}


def _walk(conv: Conversation, replay: Replay, embedder: Any, max_turns: int | None,
          on_turn: Callable[[_Bank, TurnFacts, list[Any], InMemoryStore, Decision | None], None] | None = None) -> _Bank:
    """Replay ``conv`` into a fresh bank; ``on_turn`` sees each manager decision point."""
    store = InMemoryStore(embedder)
    bank = _Bank(conv, store, MemoryManager(None, store))
    facts = replay.facts(conv)
    for i, (session, turn) in enumerate(conv.turns()):
        if max_turns is not None and i >= max_turns:
            break
        fs = facts.get(turn.dia_id)
        if not fs:
            continue
        item = TurnFacts(turn.dia_id, turn.speaker, session.timestamp, fs)
        hits = bank.manager.retrieve([item], bank.user_id)[0]
        before = store.fork() if on_turn is not None and hits else None
        gold = replay.advance(bank, item, hits)
        if before is not None:
            on_turn(bank, item, hits, before, gold)
    return bank


def _linked(conv: Conversation, dia_id: str, gold_targets: set[str]) -> tuple[list[QA], list[QA]]:
    wanted = {dia_id} | gold_targets
    questions = conv.questions()
    linked = [q for q in questions if wanted & set(q.evidence)]
    return linked, [q for q in questions if q not in linked]


def manager_episodes(conversations: Sequence[Conversation], replay: Replay, embedder: Any, *,
                     max_turns: int | None = None, progress: Callable[[int], None] | None = None) -> list[ManagerEpisode]:
    """One episode per turn the manager is asked about that is linked to a question or has gold edits."""
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        def keep(bank: _Bank, item: TurnFacts, hits: list[Any], before: InMemoryStore, gold: Decision | None,
                 conv: Conversation = conv) -> None:
            targets = {e.target for e in conv.edits.get(item.dia_id or "", ()) if e.target}
            linked, guards = _linked(conv, item.dia_id or "", targets)
            if not linked and item.dia_id not in conv.edits:
                return  # nothing would tell a good decision from a bad one
            episodes.append(ManagerEpisode(len(episodes), conv.sample_id, conv.sample_id, item, before, list(hits),
                                           linked, guards, gold))

        _walk(conv, replay, embedder, max_turns, keep)
        if progress:
            progress(1)
    return episodes


def answer_episodes(conversations: Sequence[Conversation], replay: Replay, embedder: Any, *,
                    count_tokens: Callable[[str], int] | None, max_turns: int | None = None,
                    progress: Callable[[int], None] | None = None) -> list[AnswerEpisode]:
    """One episode per scored question whose evidence lies in the replayed turns, over the final bank."""
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        bank = _walk(conv, replay, embedder, max_turns)
        seen = {t.dia_id for i, (_s, t) in enumerate(conv.turns()) if max_turns is None or i < max_turns}
        agent = AnswerAgent(None, bank.store, count_tokens=count_tokens)
        speakers = agent.speakers(bank.user_id)
        for qa in conv.questions():
            if max_turns is not None and not set(qa.evidence) <= seen:
                continue
            messages, shown = agent.prompt(qa.question, bank.user_id, speakers)
            episodes.append(AnswerEpisode(len(episodes), conv.sample_id, qa, messages, shown))
        if progress:
            progress(1)
    return episodes


def split_episodes(episodes: Sequence[Any], n_first: int, seed: int = 0) -> tuple[list[Any], list[Any]]:
    """A seeded split into two disjoint lists (``n_first`` and the rest), e.g. cold start vs GRPO prompts."""
    order = list(range(len(episodes)))
    random.Random(seed).shuffle(order)
    first = sorted(order[:n_first])
    rest = sorted(order[n_first:])
    return [episodes[i] for i in first], [episodes[i] for i in rest]


#: Shares of the decision kinds in the cold start and the GRPO prompts: a new fact stays the most
#: common decision (ADD), without drowning the rare ones (UPDATE/DELETE, NOOP).
KIND_WEIGHTS = {"new": 2, "change": 1, "repeat": 1}


def balanced(episodes: Sequence[Any], n: int | None = None, seed: int = 0, share: float = 1.0,
             weights: dict[str, int] | None = None) -> list[Any]:
    """Up to ``n`` episodes with the kinds (new / change / repeat) in the shares of ``weights``
    (default :data:`KIND_WEIGHTS`) where the data allows, taking at most ``share`` of each kind (so a
    later split still has every kind).

    Why: in a conversation most turns bring a new fact, so a uniform sample
    teaches "always ADD" (the first CPU run's manager ADDed on every held-out
    change turn), while equal shares taught UPDATE where a fact was new (the
    second run). A kind weighted 0 is left out. Answer episodes have no kind
    and are sampled uniformly.
    """
    weights = KIND_WEIGHTS if weights is None else weights
    rng = random.Random(seed)
    groups: dict[str, list[Any]] = {}
    for e in episodes:
        groups.setdefault(e.kind, []).append(e)
    for kind, group in groups.items():
        rng.shuffle(group)
        # a kind weighted 0 is left out; a kind the weights do not name (answer episodes) keeps weight 1
        groups[kind] = group[: max(1, int(len(group) * share))] if weights.get(kind, 1) else []
    n = min(len(episodes) if n is None else n, sum(len(g) for g in groups.values()))
    chosen: list[Any] = []
    while len(chosen) < n:  # weighted round robin over the kinds, each until it runs out
        for kind in sorted(groups):
            for _ in range(weights.get(kind, 1)):
                if groups[kind] and len(chosen) < n:
                    chosen.append(groups[kind].pop())
    return sorted(chosen, key=lambda e: e.id)


def to_dataset(episodes: Sequence[ManagerEpisode | AnswerEpisode]):
    """A ``datasets.Dataset``: TRL's conversational ``prompt`` plus the ``episode_id`` the rewards look up."""
    from datasets import Dataset

    if not episodes:
        raise ConfigError("no training episodes: the data has no QA linked to the replayed turns")
    return Dataset.from_list([{"prompt": e.messages, "episode_id": e.id} for e in episodes])
