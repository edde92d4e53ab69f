"""Replaying a conversation into a memory bank, turn by turn.

Episodes need, at a given turn, the bank built from the earlier turns and the
new turn's facts with their related memories. A :class:`Replay` produces
exactly that as :class:`TurnView` objects, and the final bank for the Answer
Agent's episodes. Three sources:

* :class:`ObservationReplay`: LoCoMo's annotated ``observation`` facts are
  the turn's facts and are ADDed (NOOP when already present). No LLM; the
  fast choice on a CPU and for tests.
* :class:`TurnsReplay`: each turn verbatim is its only "fact".
* :class:`~training.pipeline_replay.PipelineReplay`: the product's own
  extraction + Memory Manager (the manager in use), cached on disk.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from data.schema import Conversation
from training import pipeline
from training.bank import BankRecord, SnapshotBank

__all__ = [
    "TurnView",
    "Replay",
    "ObservationReplay",
    "TurnsReplay",
]


@dataclass(frozen=True)
class TurnView:
    """One turn as the manager meets it."""

    dia_id: str
    index: int
    timestamp: str | None
    speaker: str
    text: str
    facts: tuple[str, ...]
    shown: tuple[BankRecord, ...]  # related memories, in prompt order (small id = position)
    bank: tuple[BankRecord, ...]  # the whole bank before this turn


class Replay(Protocol):
    name: str

    def views(self, conv: Conversation, *, max_turns: int | None = None, want: set[str] | None = None) -> Iterator[TurnView]:
        """Views of the turns (only those in ``want`` when given), in order."""
        ...

    def final_bank(self, conv: Conversation, *, max_turns: int | None = None) -> list[BankRecord]:
        ...


class _FactReplay:
    """Base of the LLM-free replays: facts per turn are ADDed unless already present."""

    name = "base"

    def __init__(self, embedder: Any, *, top_k: int = pipeline.MANAGER_TOP_K):
        self.embedder = embedder
        self.top_k = top_k

    def facts(self, conv: Conversation, turn: Any) -> list[tuple[str, str]]:
        """``(speaker, fact)`` pairs of a turn."""
        raise NotImplementedError

    def views(self, conv: Conversation, *, max_turns: int | None = None, want: set[str] | None = None) -> Iterator[TurnView]:
        bank = SnapshotBank.build([], self.embedder)
        for i, (session, turn) in enumerate(conv.turns()):
            if max_turns is not None and i >= max_turns:
                return
            pairs = self.facts(conv, turn)
            facts = [f for _s, f in pairs]
            if want is None or turn.dia_id in want:
                shown = pipeline.manager_shown(bank, facts, self.top_k) if facts else []
                yield TurnView(
                    dia_id=turn.dia_id,
                    index=i,
                    timestamp=session.timestamp,
                    speaker=turn.speaker,
                    text=turn.text,
                    facts=tuple(facts),
                    shown=tuple(shown),
                    bank=tuple(bank.records),
                )
            known = {r.text.casefold() for r in bank.records}
            for speaker, fact in pairs:
                if fact.casefold() not in known:  # NOOP for a fact already stored
                    bank.add(fact, session.timestamp, speaker)
                    known.add(fact.casefold())

    def final_bank(self, conv: Conversation, *, max_turns: int | None = None) -> list[BankRecord]:
        records: list[BankRecord] = []
        known: set[str] = set()
        for i, (session, turn) in enumerate(conv.turns()):
            if max_turns is not None and i >= max_turns:
                break
            for speaker, fact in self.facts(conv, turn):
                if fact.casefold() not in known:
                    known.add(fact.casefold())
                    records.append(BankRecord(len(records) + 1, fact, session.timestamp, speaker))
        return records


class ObservationReplay(_FactReplay):
    """Facts = LoCoMo's annotated observations of the turn (empty when there are none)."""

    name = "observations"

    def facts(self, conv: Conversation, turn: Any) -> list[tuple[str, str]]:
        return [(speaker, fact) for speaker, fact in conv.observations.get(turn.dia_id, ())]


class TurnsReplay(_FactReplay):
    """Fact = the turn itself ("Speaker: text [shares a photo of ...]")."""

    name = "turns"

    def facts(self, conv: Conversation, turn: Any) -> list[tuple[str, str]]:
        from memory_agent.prompts import format_turn

        return [(turn.speaker, format_turn(turn.speaker, turn.text, turn.blip_caption))]
