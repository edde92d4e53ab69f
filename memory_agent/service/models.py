"""Request and response bodies of the memory service (REST and MCP share them).

Every request model forbids unknown fields and bounds every size, so a bad
body is one 422 naming the field before anything runs. Responses never carry
the tenant: users are the tenant's own names (``alice``), not the store's
namespaced ids.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from memory_agent.defaults import ANSWER_K

__all__ = [
    "MAX_TEXT_CHARS", "MAX_TURNS", "MAX_BODY_BYTES", "WAIT_MAX_TURNS",
    "TurnIn", "SessionIn", "TurnsIn", "JobOut", "ChangeOut", "SkippedOut", "SearchIn", "MemoryOut", "HitOut",
    "HistoryOut", "AnswerIn", "AnswerOut", "UpdateIn", "UserOut", "StatsOut", "JobAccepted",
]

MAX_TEXT_CHARS = 20_000       # one turn's text
MAX_TURNS = 2_000             # turns in one request
MAX_BODY_BYTES = 4 * 1024 * 1024
WAIT_MAX_TURNS = 20           # ?wait=true answers synchronously only for small requests

_IN = ConfigDict(extra="forbid", str_strip_whitespace=False)
_Id = Field(default=None, max_length=200)


class TurnIn(BaseModel):
    model_config = _IN
    speaker: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    dia_id: str | None = _Id
    blip_caption: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)


class SessionIn(BaseModel):
    model_config = _IN
    turns: list[TurnIn] = Field(min_length=1, max_length=MAX_TURNS)
    timestamp: str | None = Field(default=None, max_length=100)


class TurnsIn(BaseModel):
    """``{"turns": [...], "timestamp": ...}`` (the arguments of ``Memory.add``) or ``{"sessions": [...]}``."""

    model_config = _IN
    turns: list[TurnIn] | None = Field(default=None, min_length=1, max_length=MAX_TURNS)
    timestamp: str | None = Field(default=None, max_length=100)
    sessions: list[SessionIn] | None = Field(default=None, min_length=1, max_length=MAX_TURNS)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_shape(self) -> "TurnsIn":
        if (self.turns is None) == (self.sessions is None):
            raise ValueError("give either turns (with an optional timestamp) or sessions, not both")
        if self.sessions is not None and self.timestamp is not None:
            raise ValueError("timestamp goes inside each session")
        if sum(len(s.turns) for s in self.session_list()) > MAX_TURNS:
            raise ValueError(f"at most {MAX_TURNS} turns per request")
        return self

    def session_list(self) -> list[SessionIn]:
        if self.sessions is not None:
            return self.sessions
        return [SessionIn(turns=self.turns or [], timestamp=self.timestamp)]

    def n_turns(self) -> int:
        return sum(len(s.turns) for s in self.session_list())


class ChangeOut(BaseModel):
    op: str
    id: int
    old_text: str | None
    new_text: str | None
    source: str | None


class SkippedOut(BaseModel):
    stage: str
    dia_id: str | None
    reason: str


class JobAccepted(BaseModel):
    job_id: str
    status: str
    duplicate: bool = False  # true when the idempotency key named an existing job


class JobOut(BaseModel):
    job_id: str
    user: str
    status: Literal["queued", "running", "done", "failed"]
    turns: int
    turns_done: int
    progress: float
    created_at: str
    updated_at: str
    attempts: int
    applied: list[ChangeOut] = Field(default_factory=list)
    skipped: list[SkippedOut] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    error: str | None = None


class SearchIn(BaseModel):
    model_config = _IN
    query: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] | None = None
    filters: dict[str, Any] | None = None


class MemoryOut(BaseModel):
    id: int
    user: str
    text: str
    created_at: str
    updated_at: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class HitOut(MemoryOut):
    score: float


class HistoryOut(BaseModel):
    event: str
    old_text: str | None
    new_text: str | None
    actor: str
    source: str | None
    at: str


class AnswerIn(BaseModel):
    model_config = _IN
    question: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    strategy: Literal["memory", "rlm"] = "memory"
    k: int = Field(default=ANSWER_K, ge=1, le=200)


class AnswerOut(BaseModel):
    question: str
    answer: str
    valid: bool
    strategy: str
    memories: list[MemoryOut]


class UpdateIn(BaseModel):
    model_config = _IN
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)


class UserOut(BaseModel):
    user: str
    memories: int


class StatsOut(BaseModel):
    users: int
    memories: int
    jobs: dict[str, int]
