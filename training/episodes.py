"""Training episodes for the two agents, built from conversations with QA.

An *episode* is one GRPO prompt plus the data its reward needs (dataset
columns arrive in the reward as keyword lists):

* **Memory Manager** (one per turn that some question's evidence points at,
  and that yields facts): the bank built from the earlier turns, the turn's
  facts and their related memories, rendered exactly as the pipeline's
  manager prompt. Columns: ``prompt`` (chat messages), ``shown`` (JSON list
  of ``{"id", "text"}`` in prompt order: small id ``i`` = ``shown[i]``),
  ``bank`` (JSON snapshot of the bank before the turn), ``questions`` /
  ``answers`` (the linked QA), ``timestamp``, ``facts``, ``observations``
  (LoCoMo's annotated facts of the turn, for the cold start), ids.
* **Answer Agent** (one per question): ``prompt`` = the answer agent's chat
  messages over the ``retrieve_k`` memories retrieved for the question from
  the bank built over the conversation; ``answer`` (gold), ``question``, ids.

How the earlier turns become a bank is a :class:`~training.replay.Replay`:
the real pipeline (extraction + the manager in use, cached on disk per
conversation and model), LoCoMo's annotated observations, or the raw turns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.schema import Conversation
from memory_agent.errors import ConfigError
from training import pipeline
from training.bank import BankRecord, SnapshotBank, dump_records
from training.replay import Replay, TurnView

__all__ = [
    "FORBIDDEN_TRAIN_IDS",
    "load_conversations",
    "check_not_dev",
    "linked_questions",
    "ManagerEpisode",
    "AnswerEpisode",
    "manager_episodes",
    "answer_episodes",
    "to_dataset",
]

#: LoCoMo's development test conversation: never trained or tuned on.
FORBIDDEN_TRAIN_IDS = frozenset({"conv-41"})


def load_conversations(spec: str | Path | None) -> list[Conversation]:
    """``None``/``locomo:train`` -> LoCoMo train split; ``locomo:<split>``;
    ``synthetic:<n>[:<seed>]``; a ``.json`` (LoCoMo layout) or ``.jsonl`` file."""
    if spec is None or str(spec) == "locomo":
        spec = "locomo:train"
    text = str(spec)
    if text.startswith("locomo:"):
        from data.locomo import load_split

        return load_split(text.split(":", 1)[1])
    if text.startswith("synthetic:"):
        from data.synthetic import generate_dataset

        parts = text.split(":")[1:]
        n = int(parts[0]) if parts and parts[0] else 4
        seed = int(parts[1]) if len(parts) > 1 else 0
        return generate_dataset(n, seed=seed, n_questions=8)
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"no dataset {text} (a .json/.jsonl file, locomo:<split> or synthetic:<n>[:<seed>])")
    if path.suffix == ".jsonl":
        from data.jsonl import load_jsonl

        return load_jsonl(path)
    from data.locomo import load_locomo

    return load_locomo(path)


def check_not_dev(conversations: Iterable[Conversation]) -> None:
    """Refuse to train on the development test conversation (conv-41)."""
    bad = sorted({c.sample_id for c in conversations} & FORBIDDEN_TRAIN_IDS)
    if bad:
        raise ConfigError(f"refusing to train on {', '.join(bad)}: it is the held-out development test set")


def linked_questions(conv: Conversation, *, include_adversarial: bool = False) -> dict[str, list[tuple[str, str]]]:
    """dia_id -> [(question, gold answer)] for the QA whose evidence includes that turn."""
    out: dict[str, list[tuple[str, str]]] = {}
    for qa in conv.questions(include_adversarial=include_adversarial):
        for dia_id in qa.evidence:
            out.setdefault(dia_id, []).append((qa.question, qa.answer))
    return out


@dataclass
class ManagerEpisode:
    conversation_id: str
    dia_id: str
    timestamp: str | None
    facts: list[str]
    shown: list[BankRecord]
    bank: list[BankRecord]
    questions: list[str]
    answers: list[str]
    observations: list[str] = field(default_factory=list)
    speaker: str | None = None

    def row(self, tokenizer: Any = None) -> dict[str, Any]:
        return {
            "prompt": pipeline.manager_messages(self.facts, self.shown),
            "shown": json.dumps([{"id": r.id, "text": r.text} for r in self.shown], ensure_ascii=False),
            "bank": dump_records(self.bank),
            "questions": list(self.questions),
            "answers": list(self.answers),
            "timestamp": self.timestamp or "",
            "speaker": self.speaker or "",
            "facts": json.dumps(self.facts, ensure_ascii=False),
            "observations": json.dumps(self.observations, ensure_ascii=False),
            "conversation_id": self.conversation_id,
            "dia_id": self.dia_id,
        }


@dataclass
class AnswerEpisode:
    conversation_id: str
    question: str
    answer: str
    category: int
    memories: list[BankRecord]

    def row(self, tokenizer: Any = None) -> dict[str, Any]:
        return {
            "prompt": pipeline.answer_messages(self.question, self.memories, tokenizer=tokenizer),
            "question": self.question,
            "answer": self.answer,
            "category": self.category,
            "conversation_id": self.conversation_id,
            "n_memories": len(self.memories),
        }


def _observations(conv: Conversation, dia_id: str) -> list[str]:
    return [fact for _speaker, fact in conv.observations.get(dia_id, ())]


def manager_episodes(
    conversations: Sequence[Conversation],
    replay: Replay,
    *,
    max_turns: int | None = None,
    max_episodes: int | None = None,
    include_adversarial: bool = False,
) -> list[ManagerEpisode]:
    """One episode per QA-linked turn with facts, in conversation order."""
    episodes: list[ManagerEpisode] = []
    for conv in conversations:
        linked = linked_questions(conv, include_adversarial=include_adversarial)
        if not linked:
            continue
        last_linked = _last_index(conv, linked, max_turns)
        if last_linked < 0:
            continue
        view: TurnView
        # Replay only as far as the last linked turn: later turns cannot make episodes.
        for view in replay.views(conv, max_turns=last_linked + 1, want=set(linked)):
            qa = linked.get(view.dia_id)
            # The pipeline asks the manager only about turns with facts and with something
            # retrieved (into an empty bank it ADDs directly), so only those are episodes.
            if not qa or not view.facts or not view.shown:
                continue
            episodes.append(
                ManagerEpisode(
                    conversation_id=conv.sample_id,
                    dia_id=view.dia_id,
                    timestamp=view.timestamp,
                    facts=list(view.facts),
                    shown=list(view.shown),
                    bank=list(view.bank),
                    questions=[q for q, _ in qa],
                    answers=[a for _, a in qa],
                    observations=_observations(conv, view.dia_id),
                    speaker=view.speaker,
                )
            )
            if max_episodes is not None and len(episodes) >= max_episodes:
                return episodes
    return episodes


def _last_index(conv: Conversation, linked: dict[str, Any], max_turns: int | None) -> int:
    last = -1
    for i, (_session, turn) in enumerate(conv.turns()):
        if max_turns is not None and i >= max_turns:
            break
        if turn.dia_id in linked:
            last = i
    return last


def answer_episodes(
    conversations: Sequence[Conversation],
    replay: Replay,
    embedder: Any,
    *,
    retrieve_k: int = 60,
    max_turns: int | None = None,
    max_episodes: int | None = None,
    include_adversarial: bool = False,
) -> list[AnswerEpisode]:
    """One episode per question whose evidence lies in the replayed turns."""
    episodes: list[AnswerEpisode] = []
    for conv in conversations:
        replayed = [t.dia_id for i, (_s, t) in enumerate(conv.turns()) if max_turns is None or i < max_turns]
        seen = set(replayed)
        questions = [
            qa
            for qa in conv.questions(include_adversarial=include_adversarial)
            if all(e in seen for e in qa.evidence) or (max_turns is None)
        ]
        if not questions:
            continue
        bank = SnapshotBank.build(replay.final_bank(conv, max_turns=max_turns), embedder)
        for qa in questions:
            memories = pipeline.answer_retrieve(bank, qa.question, retrieve_k)
            episodes.append(AnswerEpisode(conv.sample_id, qa.question, qa.answer, qa.category, memories))
            if max_episodes is not None and len(episodes) >= max_episodes:
                return episodes
    return episodes


def to_dataset(episodes: Sequence[ManagerEpisode | AnswerEpisode], tokenizer: Any = None):
    """A ``datasets.Dataset`` with one row per episode (TRL's conversational ``prompt`` column).

    ``tokenizer`` (the policy's) counts the Answer Agent's prompt budget exactly.
    """
    from datasets import Dataset

    rows = [e.row(tokenizer) for e in episodes]
    if not rows:
        raise ConfigError("no training episodes: the data has no QA linked to the replayed turns")
    return Dataset.from_list(rows)
