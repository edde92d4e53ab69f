"""Typed conversation records shared by every dataset of the project.

LoCoMo, the synthetic generator and the plain JSONL format all produce the same
records (:class:`Conversation` of :class:`Session` of :class:`Turn`, plus
:class:`QA`), so the evaluation harness and the training code see one shape.

The question categories are pinned here, in one place, because several public
re-implementations of LoCoMo swap them: the codes below are the ones of the
released ``locomo10.json`` (1 multi-hop, 2 temporal, 3 open-domain, 4
single-hop, 5 adversarial).

This package imports nothing else of the project (see docs/architecture.md),
so its error type, :class:`DatasetError`, is a plain ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data.dates import parse_date

__all__ = [
    "CATEGORIES",
    "CATEGORY_CODES",
    "ADVERSARIAL",
    "NOT_MENTIONED",
    "DatasetError",
    "Turn",
    "Session",
    "QA",
    "MemoryEdit",
    "Conversation",
    "parse_locomo_datetime",
]

#: LoCoMo question categories: code -> name. The only place these are written.
CATEGORIES: dict[int, str] = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}
#: name -> code, the inverse of :data:`CATEGORIES`.
CATEGORY_CODES: dict[str, int] = {name: code for code, name in CATEGORIES.items()}
#: The adversarial category, left out of the scores by the usual protocol.
ADVERSARIAL = 5
#: Gold answer of an adversarial question that has none in the file: the
#: answer LoCoMo's own evaluation expects ("not mentioned").
NOT_MENTIONED = "Not mentioned in the conversation"


class DatasetError(ValueError):
    """A dataset file is missing, malformed or lacks a requested split.

    The message always names the path and the reason.
    """

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Turn(BaseModel):
    """One utterance. ``blip_caption`` describes an image the speaker shared."""

    model_config = _FROZEN

    dia_id: str
    speaker: str
    text: str
    blip_caption: str | None = None


class Session(BaseModel):
    """One sitting of the conversation, at ``timestamp`` (ISO-8601, conversation time)."""

    model_config = _FROZEN

    index: int
    date_time: str  # as written in the source, e.g. "1:56 pm on 8 May, 2023"
    timestamp: str  # ISO-8601, e.g. "2023-05-08T13:56:00"
    turns: tuple[Turn, ...]


class QA(BaseModel):
    """A question with its gold answer.

    ``tags`` marks project-specific kinds on top of the LoCoMo category; the
    synthetic generator uses ``"current"`` for questions about the latest state
    of a fact that changed (only an UPDATE/DELETE-aware memory gets them right).
    """

    model_config = _FROZEN

    question: str
    answer: str
    evidence: tuple[str, ...] = ()
    category: int
    adversarial_answer: str | None = None
    tags: tuple[str, ...] = ()
    #: For a "what is X now" question: values that were true and no longer are
    #: ("Lisbon"), and the values that replaced them as a memory would write
    #: them ("Denver"). A memory naming a superseded value and none of the
    #: current ones states an outdated fact (the manager reward penalises it).
    superseded_values: tuple[str, ...] = ()
    current_values: tuple[str, ...] = ()

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: int) -> int:
        if value not in CATEGORIES:
            raise ValueError(f"category must be one of {sorted(CATEGORIES)}, got {value}")
        return value

    @property
    def category_name(self) -> str:
        return CATEGORIES[self.category]

    @property
    def is_adversarial(self) -> bool:
        return self.category == ADVERSARIAL


class MemoryEdit(BaseModel):
    """What a perfect Memory Manager does with one turn's fact (known for generated data only).

    ``target`` is the dialogue id of the turn whose memory an UPDATE, DELETE or
    NOOP concerns (the memory that turn's fact was stored as).
    """

    model_config = _FROZEN

    op: Literal["ADD", "UPDATE", "DELETE", "NOOP"]
    text: str | None = None
    target: str | None = None

    @model_validator(mode="after")
    def _fields_of_the_op(self) -> MemoryEdit:
        if self.op in ("ADD", "UPDATE") and not (self.text or "").strip():
            raise ValueError(f"an {self.op} edit needs its text")
        if self.op in ("UPDATE", "DELETE", "NOOP") and not self.target:
            raise ValueError(f"a {self.op} edit needs the target dia_id of the memory it concerns")
        return self


class Conversation(BaseModel):
    """A multi-session conversation between two speakers, with its questions.

    ``observations`` maps a dialogue id to the ``(speaker, fact)`` pairs that the
    annotators derived from it (LoCoMo's ``observation``); empty when unknown.
    ``edits`` maps a dialogue id to what a perfect manager does with those facts
    (ADD a new one, UPDATE or DELETE the memory it supersedes, NOOP a repeat).
    """

    model_config = _FROZEN

    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    qa: tuple[QA, ...] = ()
    observations: dict[str, tuple[tuple[str, str], ...]] = Field(default_factory=dict)
    #: dia_id -> the gold memory edits of that turn (synthetic data; empty for LoCoMo).
    edits: dict[str, tuple[MemoryEdit, ...]] = Field(default_factory=dict)

    def turns(self) -> Iterator[tuple[Session, Turn]]:
        """Every (session, turn) pair in conversation order."""
        for session in self.sessions:
            for turn in session.turns:
                yield session, turn

    @property
    def n_turns(self) -> int:
        return sum(len(s.turns) for s in self.sessions)

    def questions(self, *, include_adversarial: bool = False) -> list[QA]:
        """The questions to score; adversarial ones only when asked for."""
        return [q for q in self.qa if include_adversarial or not q.is_adversarial]


def parse_locomo_datetime(text: str) -> str:
    """``"1:56 pm on 8 May, 2023"`` -> ``"2023-05-08T13:56:00"``.

    ISO-8601 input is returned normalised. Raises ``ValueError`` when the text
    matches no known form.
    """
    when = parse_date(text)
    if when is not None:
        return when.isoformat()
    raise ValueError(f"unrecognised date/time {text!r}")
